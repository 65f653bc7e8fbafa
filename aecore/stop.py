"""Stopping runs cleanly: the first Ctrl-C / SIGTERM becomes a flag that the trainer checks
between chunks, saving a checkpoint before it stops."""

from __future__ import annotations

import signal
import sys
import threading


class StopSignals:
    """Turns the first SIGINT / SIGTERM into a flag checked between chunks; a second one
    raises KeyboardInterrupt as usual (the last end-of-epoch checkpoint is still on disk).

    The handlers are installed (in ``with``) only from the main thread. Runs trained in other
    threads (``aecore study --jobs``) share the main thread's instance: each checks the flag
    between its chunks, and ``stop(reason)`` raises it from code (another run failed)."""

    def __init__(self):
        self.received = None
        self._old = {}

    def stop(self, reason: str):
        """Ask every run that checks this flag to save a checkpoint and stop."""
        if self.received is None:
            self.received = reason

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        sys.stderr.write(f"\n{self.received} received: saving a checkpoint after the current chunk"
                         " (send it again to stop at once)\n")
        sys.stderr.flush()

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
