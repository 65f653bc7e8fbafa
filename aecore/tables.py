"""Text tables as the commands print them: columns padded to their widest cell.

``format_table`` is plain text (aecore train's and aecore bench's summaries), ``markdown_table``
a Markdown table that reads in a terminal too (aecore report). Cells are strings, already
formatted; ``fmt_num`` is how the report writes a number from the run files.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence


def fmt_num(v) -> str:
    """A float from the run files as the report prints it: 6 significant digits; '-' for none."""
    if v is None:
        return "-"
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return format(v, ".6g")


def _widths(head: Sequence[str], rows, minimum: Sequence[int] | None) -> list[int]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return widths if minimum is None else [max(w, m) for w, m in zip(widths, minimum)]


def _pad(cells, widths, head, left: Collection[str]) -> list[str]:
    return [c.ljust(w) if h in left else c.rjust(w) for c, w, h in zip(cells, widths, head)]


def format_table(head: Sequence[str], rows: Sequence[Sequence[str]], *, left: Collection[str] = (),
                 gap: str = "  ", minimum: Sequence[int] | None = None,
                 full_rule: bool = False) -> str:
    """The header, a rule of dashes, then the rows; cells right-aligned except in the columns
    named in ``left``, joined by ``gap``. ``minimum``: the least width of each column. The rule
    is one dash run per column, or one across the whole width with ``full_rule``."""
    widths = _widths(head, rows, minimum)
    lines = [gap.join(_pad(r, widths, head, left)) for r in [head, *rows]]
    rule = "-" * len(lines[0]) if full_rule else gap.join("-" * w for w in widths)
    return "\n".join([lines[0], rule, *lines[1:]])


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]], *,
                   left: Collection[str] = ()) -> str:
    """A Markdown table with padded columns; the columns named in ``left`` are left-aligned,
    the others right-aligned (``---:``)."""
    widths = _widths(head, rows, None)

    def line(cells):
        return "| " + " | ".join(_pad(cells, widths, head, left)) + " |"

    sep = "|" + "|".join(("-" * (w + 2)) if h in left else ("-" * (w + 1) + ":")
                         for w, h in zip(widths, head)) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])
