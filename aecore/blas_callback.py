"""OpenBLAS's parallel jobs run on two threads of aecore's own, through OpenBLAS's thread callback.

OpenBLAS 0.3.27+ lets a program replace its thread server: after
``openblas_set_threads_callback_function(cb)`` every multithreaded BLAS call hands its jobs to
``cb(sync, dojob, numjobs, jobdata_elsize, jobdata, dojob_data)``, which must run
``dojob(i, jobdata + i * elsize, dojob_data)`` for each job i, all at the same time (a gemm's
jobs wait on each other's packed panels), and return when all are done (cblas.h,
driver/others/blas_server.c). The split is OpenBLAS's own, so the products' bits are those of
its own two threads.

Here the jobs go to a two-thread team: the *driver* (the thread that calls sgemm, inside
``@njit`` code) runs job 0 and posts job 1 to a *worker* thread, which spins (then yields) in
``serve`` between commands. The same worker runs the other half of any phase the driver posts
(``post`` + its own half + ``wait``), so one team does both the products and the epilogues,
with no second spinning pool. The control block ``ctrl`` (int64, one per process, as the
callback is) carries the commands:

    SEQ   driver -> worker: number of the last command posted (release / acquire)
    DONE  worker -> driver: number of the last command finished
    CMD, ARG..ARG+3: the command and its arguments, written before SEQ
    DRIVER: pthread_self() of the driver while a team runs; 0 otherwise
    ABORT: set by either side when it fails, so the other stops waiting

Calls from any other thread while a team runs (or with more than two jobs) cannot use the
team: ``_other_caller`` runs them on threads of their own.
"""

from __future__ import annotations

import ctypes
import threading
import time

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from .cpu_pair import _load_acquire, _pause, _sched_yield, _store_release, spin_wait
from .kernels.blas_pair import _i64p as _int64_ptr, _pthread_self
from .kernels.ftz import flush_denormals_on, restore

_LINE = 8
SEQ, DONE, ABORT, CMD, ARG, DRIVER = 0, _LINE, 2 * _LINE, 3 * _LINE, 3 * _LINE + 1, 4 * _LINE
LOCK, JOB_THREAD, OTHERS = 5 * _LINE, 5 * _LINE + 1, 5 * _LINE + 2  # other callers' lock,
# _job_thread's address, how many calls _other_caller ran
PARK, PARKED = 6 * _LINE, 7 * _LINE  # OpenBLAS's threads may go / how many are parked
SLOT = 6 * _LINE + 1  # the team's first OpenBLAS thread number (see BlasTeam.run)
CTRL_SIZE = 8 * _LINE
# OpenBLAS thread numbers (each has its status slot and buffer): its own threads use 0 ..
# blas_num_threads - 2; the team's two the next ones (SLOT), other callers' jobs (_other_caller)
# the ones after; all below its MAX_THREADS
CMD_EXIT, CMD_JOB = -1, -2  # any other command number is a phase (>= 0) for the step
_SPINS = 200  # pause-spins (~3 us) before a waiting thread yields its core

_libc = ctypes.CDLL(None)
for _name in ("pthread_create", "pthread_join", "usleep"):
    llvm.add_symbol("aecore_" + _name, ctypes.cast(getattr(_libc, _name), ctypes.c_void_p).value)
# pointers passed as int64 (the same registers in the C calling convention)
_pthread_create = types.ExternalFunction("aecore_pthread_create", types.int32(*[types.int64] * 4))
_pthread_join = types.ExternalFunction("aecore_pthread_join", types.int32(types.int64, types.int64))
_usleep = types.ExternalFunction("aecore_usleep", types.int32(types.uint32))


@intrinsic
def _call_job(typingctx, fn, thread_num, jobdata, dojob_data):
    """fn(thread_num, (void *) jobdata, dojob_data): OpenBLAS's openblas_dojob_callback."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i8p, i32])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                     [args[1], builder.inttoptr(args[2], i8p), args[3]])
        return context.get_dummy_value()

    return types.void(types.int64, types.int32, types.int64, types.int32), codegen


@intrinsic
def _swap(typingctx, arr, index, value):
    """Atomically arr[index] <- value; returns the old value."""
    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.atomic_rmw("xchg", builder.gep(a.data, [args[1]]), args[2], "acq_rel")

    return types.int64(arr, types.intp, types.int64), codegen


@intrinsic
def _add(typingctx, arr, index, value):
    """Atomically arr[index] += value."""
    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        builder.atomic_rmw("add", builder.gep(a.data, [args[1]]), args[2], "acq_rel")
        return context.get_dummy_value()

    return types.void(arr, types.intp, types.int64), codegen


@njit(cache=True, nogil=True)
def _park(ctrl):
    """An OpenBLAS thread's job while a team runs: sleep (100 us at a time) until released."""
    _add(ctrl, PARKED, 1)
    while _load_acquire(ctrl, PARK) == 0:
        _usleep(np.uint32(100))
    _add(ctrl, PARKED, -1)


@njit(cache=True, nogil=True)
def _wait_for(ctrl, slot, value):
    """Wait until ctrl[slot] >= value; False if the other side aborted."""
    return spin_wait(ctrl, slot, value, ABORT)


@njit(cache=True, nogil=True)
def post(ctrl, cmd, a0, a1, a2, a3):
    """Driver: give the worker a command; returns its number for ``wait``."""
    seq = ctrl[SEQ] + 1  # only the driver writes SEQ
    ctrl[CMD] = cmd
    ctrl[ARG] = a0
    ctrl[ARG + 1] = a1
    ctrl[ARG + 2] = a2
    ctrl[ARG + 3] = a3
    _store_release(ctrl, SEQ, seq)
    return seq


@njit(cache=True, nogil=True)
def wait(ctrl, seq):
    """Driver: wait until the worker has finished command ``seq``; False if it aborted."""
    return _wait_for(ctrl, DONE, seq)


@njit(cache=True, nogil=True)
def begin(ctrl):
    """Driver: make this thread the one whose BLAS calls the team runs."""
    _store_release(ctrl, DRIVER, _pthread_self())


@njit(cache=True, nogil=True)
def finish(ctrl):
    """Driver: stop the worker (its ``serve`` returns) and give up the team."""
    _store_release(ctrl, DRIVER, 0)
    seq = post(ctrl, CMD_EXIT, 0, 0, 0, 0)
    wait(ctrl, seq)


@njit(cache=True, nogil=True)
def next_command(ctrl, seen):
    """Worker: wait for the command after ``seen``; (its number, or -1 on abort)."""
    if not _wait_for(ctrl, SEQ, seen + 1):
        return -1
    return _load_acquire(ctrl, SEQ)


@njit(cache=True, nogil=True)
def run_job(ctrl, mxcsr):
    """Worker: run the posted BLAS job under the MXCSR an OpenBLAS thread has (``mxcsr``,
    the worker's own at start: no flush-to-zero), as OpenBLAS's server thread would."""
    ftz = flush_denormals_on()
    restore(mxcsr)
    _call_job(ctrl[ARG], np.int32(ctrl[SLOT] + 1), ctrl[ARG + 1], np.int32(ctrl[ARG + 2]))
    restore(ftz)


@njit(cache=True, nogil=True)
def done(ctrl, seq):
    _store_release(ctrl, DONE, seq)


@njit(cache=True, nogil=True)
def _run_jobs(ctrl, dojob, numjobs, elsize, jobdata, dojob_data):
    """The callback's body: OpenBLAS's ``numjobs`` jobs, on the team when the caller is its
    driver and there are two; otherwise ``_other_caller``."""
    slot = np.int32(ctrl[SLOT])
    if numjobs == 1:
        _call_job(dojob, slot, jobdata, dojob_data)
        return
    if numjobs == 2 and _load_acquire(ctrl, DRIVER) == _pthread_self():
        seq = post(ctrl, CMD_JOB, dojob, jobdata + elsize, dojob_data, 0)
        _call_job(dojob, slot, jobdata, dojob_data)
        wait(ctrl, seq)  # False if the worker failed: the step loop stops at its next phase
        return
    _other_caller(ctrl, dojob, numjobs, elsize, jobdata, dojob_data)


@njit(cache=True, nogil=True)
def _other_caller(ctrl, dojob, numjobs, elsize, jobdata, dojob_data):
    """A multi-job call the team cannot take: another thread of the process calling scipy's
    BLAS while a team runs (or more than two jobs). Its jobs wait on each other, so they
    cannot run one after another: job 0 runs here and the others on threads started for the
    call (slow, but correct), with OpenBLAS thread numbers after the team's, so they use
    other buffers; one such call at a time (ctrl[LOCK])."""
    spins = 0
    while _swap(ctrl, LOCK, 1) != 0:
        if spins < _SPINS:
            spins += 1
            _pause()
        else:
            _sched_yield()
    base = ctrl[SLOT] + 2
    args = np.empty((numjobs, 4), np.int64)
    tids = np.zeros(numjobs, np.int64)
    for i in range(numjobs):
        args[i, 0] = dojob
        args[i, 1] = base + i
        args[i, 2] = jobdata + i * elsize
        args[i, 3] = dojob_data
    for i in range(1, numjobs):
        _pthread_create(tids.ctypes.data + 8 * i, 0, ctrl[JOB_THREAD], args.ctypes.data + 32 * i)
    _call_job(dojob, np.int32(base), jobdata, dojob_data)
    for i in range(1, numjobs):
        _pthread_join(tids[i], 0)
    ctrl[OTHERS] += 1
    _store_release(ctrl, LOCK, 0)


def _job_thread(arg):
    """A started thread's body (void *(*)(void *)): one job of args[i] in _other_caller."""
    a = carray(_int64_ptr(arg), (4,))
    _call_job(a[0], np.int32(a[1]), a[2], np.int32(a[3]))
    return 0


_SIG = types.void(types.int32, types.int64, types.int32, types.int64, types.int64, types.int32)
_CTRL = np.zeros(CTRL_SIZE, np.int64)  # the process's one control block (the callback's)
_LOCK = threading.Lock()  # one team at a time: OpenBLAS has one callback per library
_state: dict = {}


def _callback():
    """The C callback for _CTRL (compiled once per process: _CTRL's address is a constant)."""
    if "cb" not in _state:
        addr = _CTRL.ctypes.data

        def cb(sync, dojob, numjobs, elsize, jobdata, dojob_data):
            _run_jobs(carray(_int64_ptr(addr), (CTRL_SIZE,)), dojob, numjobs, elsize, jobdata,
                      dojob_data)

        _state["cb"] = cfunc(_SIG, nopython=True)(cb)
        _state["job_thread"] = cfunc(types.int64(types.int64), nopython=True)(_job_thread)

        def park(arg):
            _park(carray(_int64_ptr(addr), (CTRL_SIZE,)))

        _state["park"] = cfunc(types.void(types.int64), nopython=True)(park)
    return _state["cb"]


def _scipy_openblas():
    """(ctypes library, threadpoolctl's record) of the BLAS aecore's sgemm calls, or (None,
    reason)."""
    from .blas_info import aecore_blas

    lib = aecore_blas()
    if lib is None:
        return None, "cannot tell which BLAS library scipy uses"
    if lib.get("internal_api") != "openblas":
        return None, f"scipy's BLAS is {lib.get('internal_api')}, not OpenBLAS"
    handle = ctypes.CDLL(lib["filepath"])
    if not hasattr(handle, "openblas_set_threads_callback_function"):
        return None, (f"scipy's OpenBLAS {lib.get('version')} has no "
                      "openblas_set_threads_callback_function (needs 0.3.27+)")
    return handle, lib


def _max_threads(handle) -> int:
    """OpenBLAS's MAX_THREADS (its per-thread arrays' length), from its config string."""
    for name in ("openblas_get_config", "scipy_openblas_get_config"):
        if hasattr(handle, name):
            f = getattr(handle, name)
            f.restype = ctypes.c_char_p
            for word in f().decode(errors="replace").split():
                if word.startswith("MAX_THREADS="):
                    return int(word.split("=")[1])
    return 4  # unknown: the team takes thread numbers 0 and 1, as OpenBLAS's callback does


def unavailable_reason() -> str | None:
    """Why a team cannot run here (one line), or None when it can."""
    handle, why = _scipy_openblas()
    return why if handle is None else None


class BlasTeam:
    """Runs ``driver(ctrl, *args)`` on the calling thread and ``worker(ctrl, *args)`` on one
    Python thread, with scipy's OpenBLAS on two threads whose jobs the team runs; OpenBLAS's
    own thread server (and thread count) is put back after each run."""

    def __init__(self):
        handle, lib = _scipy_openblas()
        if handle is None:
            raise RuntimeError(lib)
        from threadpoolctl import ThreadpoolController

        self._set = handle.openblas_set_threads_callback_function
        self._set.argtypes = [ctypes.c_void_p]
        self._set.restype = None
        self._cb = _callback()
        self._max_threads = _max_threads(handle)
        self._blas = ThreadpoolController().select(filepath=lib["filepath"])
        try:  # OpenBLAS internals, to park its own threads for the run (see _park_server)
            self._pthread_jobs = handle.gotoblas_pthread
            self._pthread_jobs.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                           ctypes.c_int]
            self._n_threads = ctypes.c_int.in_dll(handle, "blas_num_threads")
        except (AttributeError, ValueError):
            self._pthread_jobs = self._n_threads = None

    def _park_server(self):
        """Park OpenBLAS's own threads for the run (each in ``_park``, asleep); returns the
        thread that waits for them, or None.

        Why: after a multithreaded call, OpenBLAS's threads busy-wait (``nop`` loops on x86)
        for 2^28 cycles (~70 ms) before they sleep. On two cores that spinner takes a core
        from the team: steps were 3-4x slower right after a default-path run. OpenBLAS's
        ``gotoblas_pthread`` runs a function on the caller and on each of its threads; here
        ``_park``, which sleeps until ctrl[PARK] is set, from a helper thread, before the
        callback is set (so it goes to OpenBLAS's own server)."""
        if self._pthread_jobs is None:
            return None
        n = max(self._n_threads.value, 1)
        th = threading.Thread(target=self._pthread_jobs, name="aecore-blas-park", daemon=True,
                              args=(n, _state["park"].address, _CTRL.ctypes.data, 0))
        th.start()
        for _ in range(20000):  # <= ~1 s; then go on (slower, not wrong)
            if _CTRL[PARKED] >= n:
                break
            time.sleep(50e-6)
        return th

    def run(self, driver, worker, args):
        ctrl = _CTRL
        err = []

        def other():
            try:
                worker(ctrl, *args)
            except BaseException as ex:  # noqa: BLE001 - re-raised on the caller's thread
                err.append(ex)
                ctrl[ABORT] = 1

        with _LOCK, self._blas.limit(limits=2):
            ctrl[:] = 0
            ctrl[JOB_THREAD] = _state["job_thread"].address
            ctrl[SLOT] = (min(max(self._n_threads.value - 1, 0), self._max_threads - 4)
                          if self._n_threads else 0)
            parked = self._park_server()
            self._set(self._cb.address)
            try:
                th = threading.Thread(target=other, name="aecore-blas-team", daemon=True)
                th.start()
                try:
                    out = driver(ctrl, *args)
                except BaseException:
                    ctrl[ABORT] = 1
                    raise
                finally:
                    th.join()
            finally:
                self._set(None)
                ctrl[PARK] = 1
                if parked is not None:
                    parked.join()
                    while ctrl[PARKED] > 0:  # OpenBLAS's threads back in their own loop
                        time.sleep(50e-6)
            if err:
                raise err[0]
        return out
