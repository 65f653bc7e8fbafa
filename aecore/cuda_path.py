"""How a CUDA run is driven: ``cuda_path`` (a TrainConfig field, ``--cuda-path``).

* ``eager``: five kernel launches per step (aecore/engine_cuda.py);
* ``graphs``: the same launches recorded once per chunk into a CUDA graph and replayed;
* ``persistent``: one launch of the persistent multi-run kernel per chunk for every run that
  can share it (aecore/engine_persistent.py): the runs of ``aecore train --hidden 64,128,...``
  or of ``aecore study`` that share batch size and data;
* ``auto``: ``AUTO_PATH`` below.

No module here imports numba: config.py checks the values with it.
"""

from __future__ import annotations

CUDA_PATHS = ("auto", "persistent", "graphs", "eager")
# What ``auto`` picks: the fastest path measured on a GPU so far. The graphs path was measured
# (bench/RESULTS.md); the persistent kernel is not yet (no GPU lent since it was built), so it
# stays opt-in until bench/gpu_session.sh's persistent and study stages say it is faster.
AUTO_PATH = "graphs"

# What the persistent kernel trains: the TrainConfig fields other models may set, and the only
# value of each it supports (fields absent on this branch read as their default). Every
# learning-rate schedule and warm-up are trained: each run's per-step hyper-parameters come
# packed per chunk (RunView.hparams), as the eager and graphs paths take them.
PERSISTENT_SUPPORTS = {"activation": "leaky_relu", "loss": "mse"}


def persistent_refusal(config) -> str | None:
    """Why the persistent kernel cannot train ``config`` (one line), or None if it can."""
    for name, only in PERSISTENT_SUPPORTS.items():
        value = getattr(config, name, only)
        if value != only:
            return (f"the persistent kernel trains only {name} {only!r} (this run asks for "
                    f"{value!r}); use --cuda-path graphs or eager")
    return None


def resolve(config) -> str:
    """persistent | graphs | eager: the path a run of ``config`` takes on CUDA."""
    path = getattr(config, "cuda_path", "auto")
    if path != "auto":
        return path
    if AUTO_PATH == "persistent" and persistent_refusal(config):
        return "graphs"
    return AUTO_PATH


def path_problem(config) -> str | None:
    """A problem with ``config.cuda_path`` (for config_problems), or None."""
    path = getattr(config, "cuda_path", "auto")
    if path not in CUDA_PATHS:
        return f"unknown CUDA path {path!r}; choose one of {', '.join(CUDA_PATHS)}"
    if path == "persistent":
        return persistent_refusal(config)
    return None
