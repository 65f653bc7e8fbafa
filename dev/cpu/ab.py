"""A/B of the own CPU step between interpreters (each a venv with its own checkout of aecore),
alternating process by process, round after round.

    python dev/cpu/ab.py --rounds 6 /tmp/base/.venv/bin/python .venv/bin/python -- 512:64 128:256

Each round runs ``own_step_times.py`` once under every interpreter, in the order given (every
other round in reverse order); then it prints, per shape, each interpreter's median and its
paired ratios to the first one. Why
processes and rounds: on the 2-vCPU hosts of bench/RESULTS.md the same product ran 12% apart
from one allocation to the next (which physical pages it got), and the host's speed drifts
over minutes; a difference under ~3% in fewer than six rounds was not a result there
("Session 18"). An ``ENV=value`` prefix sets a variable for that interpreter only
(``NUMBA_CACHE_DIR=/tmp/c .venv/bin/python``); options after the interpreter go to
``own_step_times.py`` (``".venv/bin/python --by-rows 0"``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("own_step_times.py")


def run_once(spec: str, shapes: list[str]) -> dict[str, float]:
    """{shape: µs} from one process of ``spec`` (``[VAR=value ...] python [--option ...]``:
    the options go to ``own_step_times.py``)."""
    words = shlex.split(spec)
    env = dict(os.environ)
    while words and "=" in words[0] and not words[0].startswith("/"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    out = subprocess.run([words[0], str(SCRIPT), *words[1:], *shapes], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return {out[i]: float(out[i + 1]) for i in range(0, len(out), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("specs", nargs="+", help="interpreters, then -- and the h:B shapes")
    argv = sys.argv[1:]
    if "--" not in argv:
        ap.error("give the shapes after --")
    cut = argv.index("--")
    args = ap.parse_args(argv[:cut])
    shapes = argv[cut + 1:]
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in args.specs}
    for r in range(args.rounds):
        # every other round in reverse: a process right after another ran up to 5% slower
        # there, whatever its code (an A/A test, bench/RESULTS.md "Session 18")
        for spec in args.specs if r % 2 == 0 else args.specs[::-1]:
            runs[spec].append(run_once(spec, shapes))
            print(f"round {r + 1} [{spec}] " + "  ".join(
                f"{k} {v:.1f}" for k, v in runs[spec][-1].items()), flush=True)
    base = args.specs[0]
    for shape in shapes:
        print(f"{shape}:")
        for spec in args.specs:
            got = [x[shape] for x in runs[spec]]
            ratios = [a / b[shape] for a, b in zip(got, runs[base])]
            ratio = statistics.median(ratios)
            print(f"  {statistics.median(got):8.1f} us median, ratio {ratio:.3f}"
                  f" (paired {min(ratios):.3f}-{max(ratios):.3f})  [{spec}]")


if __name__ == "__main__":
    main()
