"""A pytest plugin for finding where the suite's time goes: each test's CPU seconds.

Under ``pytest -n 4`` on two cores a test's wall time says more about its neighbours than about
itself, and ``--durations`` only gives wall time. This records, per test, the CPU seconds of
the process running it (all its threads: the CUDA simulator's, OpenBLAS's) and of the
subprocesses it waited for, one tab-separated line per test, a file per xdist worker:

    PYTHONPATH=dev python -m pytest -p pytest_cpu_times --cpu-times /tmp/cpu
    cat /tmp/cpu.*.tsv | sort -t$'\\t' -k2 -rn | head     # nodeid, self s, children s, wall s

Not counted: processes a test starts and does not wait for (Ray's raylet and workers).
Measurements: bench/RESULTS.md, "Session 16".
"""

from __future__ import annotations

import os
import resource
import time

import pytest


def pytest_addoption(parser):
    parser.addoption("--cpu-times", metavar="PREFIX", default=None,
                     help="write each test's CPU seconds to PREFIX.<worker>.tsv")


def _cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, waited.ru_utime + waited.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    prefix = item.config.getoption("--cpu-times")
    if prefix is None:
        yield
        return
    own0, waited0 = _cpu_seconds()
    wall0 = time.perf_counter()
    yield
    own1, waited1 = _cpu_seconds()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(f"{prefix}.{worker}.tsv", "a") as f:
        f.write(f"{item.nodeid}\t{own1 - own0:.2f}\t{waited1 - waited0:.2f}\t"
                f"{time.perf_counter() - wall0:.2f}\n")
