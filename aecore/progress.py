"""What a run prints: a progress bar on stderr (on a terminal) and one line per epoch on stdout."""

from __future__ import annotations

import sys
import time


def fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A one-line progress bar on stderr (only on a terminal, and only with ``bar``: runs
    trained side by side print their epoch lines alone) and one line per epoch on stdout."""

    def __init__(self, enabled: bool, epochs: int, n: int, label: str, bar: bool = True):
        self.enabled = enabled
        self.tty = enabled and bar and sys.stderr.isatty()
        self.epochs, self.n, self.label = epochs, n, label
        self.t_last = 0.0
        self.drawn = False  # a bar is on the terminal's current line

    def chunk(self, epoch, pos, loss, rate):
        if not self.tty:
            return
        now = time.perf_counter()
        if pos < self.n and now - self.t_last < 0.2:
            return
        self.t_last = now
        left_epoch = (self.n - pos) / rate if rate else 0.0
        left_all = left_epoch + (self.epochs - epoch) * self.n / rate if rate else 0.0
        frac = pos / self.n
        bar = "#" * int(frac * 24)
        sys.stderr.write(
            f"\r{self.label} epoch {epoch}/{self.epochs} [{bar:<24}] {frac:4.0%} "
            f"{rate:,.0f} samples/s loss {loss:.5f} ETA {fmt_time(left_epoch)} "
            f"(run {fmt_time(left_all)})\033[K")
        sys.stderr.flush()
        self.drawn = True

    def close(self):
        """Clear the bar, so that what is printed next (an error) starts a line of its own."""
        if self.drawn:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.drawn = False

    def epoch(self, row, note=""):
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.drawn = False
        # one write per line: runs in other threads print theirs between, never inside
        sys.stdout.write(f"{self.label} epoch {row['epoch']:>4}/{self.epochs}  "
                         f"train {row['train_loss']:.6f}  val {row['val_loss']:.6f}  "
                         f"{row['seconds']:.2f}s  {row['samples_per_s']:,.0f} samples/s{note}\n")
        sys.stdout.flush()
