"""CUDA versions of the fused kernels: Numba CUDA tiled GEMMs with the epilogue on the accumulators.

Each public function computes exactly the function of the same name in ``kernels.reference``
(float64), in float32 with float32 accumulation, writing into caller-provided device arrays
(numba device arrays or anything with ``__cuda_array_interface__``); nothing here synchronises
with the host. Names and argument order mirror ``kernels.cpu``; the extra keyword arguments
``perm=`` / ``off=`` make a kernel read its batch rows through an index array (the epoch's
permutation, kept on the device), so a batch is never gathered into a separate buffer.

Layout (as karpathy/llm.c's ``llmc/``: one GEMM core, one module per fused op):

* ``config``: tile shape, compile options, signature fragments;
* ``gemm``: the one main loop (generated per operand layout, row gather, prefetch) and split-K;
* ``launch``: the kernel registry, grids, the split-K plan (``SplitK``), placeholders;
* ``fused_linear_leaky_relu``, ``fused_linear_sigmoid`` (+ MSE, + the loss reset),
  ``fused_backward_hidden``, ``fused_weight_step`` (gradients and the fused optimizer updates):
  each kernel with its launcher; the other hidden activations and losses are kernels of the
  same modules made on first use per choice (``linear_activation``, ``backward_activation``,
  ``linear_sigmoid_loss_grad``; ``activation_loss_kernels()`` lists them for the PTX test);
* ``ptx``: PTX without a GPU, the K-step instruction counts, ptxas registers;
* ``persistent``: one cooperative launch that trains several runs a chunk of steps (the same
  main loops and epilogues; ``--cuda-path persistent``, aecore/engine_persistent.py; not in
  ``KERNELS``: its PTX is tested on its own, tests/test_cuda_persistent.py).

Variants kept only to be measured (register prefetch, the paired weight updates) live in
``dev/cuda/`` with their reference checks and timing harness.

uint8 pixels are converted to float32 as they are loaded and the 1/255 scale is applied once to
the accumulator (the product is linear in X), so the dataset stays uint8 on the device.
``KERNELS`` lists ``(pyfunc, signature)`` of every production kernel; ``tests/test_cuda_ptx.py``
compiles each for sm_80 and sm_90.
"""

from __future__ import annotations

from .fused_backward_hidden import backward_activation, backward_hidden
from .config import BK, BM, BN, NTHREADS, PIXEL_SCALE, SIMULATOR, TILE, TM, TN
from .launch import MIN_SLICE_STEPS, Kernel, SplitK, compile_all, empty
from .fused_linear_leaky_relu import linear_activation, linear_leaky_relu
from .fused_linear_sigmoid import (linear_sigmoid, linear_sigmoid_loss_grad, linear_sigmoid_mse,
                                   zero_, zero_kernel)
from .ptx import compile_ptx
from .fused_weight_step import (OPT_ADAM, OPT_MOMENTUM, OPT_NESTEROV, OPT_NONE, OPT_SGD,
                          adam_hparams, adam_hparams_steps, adam_weight_step, hparams,
                          launch_weight_step, momentum_weight_step, sgd_weight_step,
                          weight_grad, weight_step)

# Every production (pyfunc, signature): the PTX test compiles each for sm_80 and sm_90.
KERNELS = [v for k in Kernel.registry for v in k.variants.values()]


def activation_loss_kernels():
    """(pyfunc, signature) of every kernel of a non-default activation or loss (made now)."""
    from ..activations_reference import ACTIVATIONS
    from ..losses_reference import LOSSES
    from .fused_backward_hidden import activation_kernel as backward_kernel
    from .fused_linear_leaky_relu import activation_kernel as forward_kernel
    from .fused_linear_sigmoid import loss_kernel

    made = [f(a) for a in ACTIVATIONS[1:] for f in (forward_kernel, backward_kernel)]
    made += [loss_kernel(name) for name in LOSSES[1:]]
    return [v for k in made for v in k.variants.values()]


GEMM_KERNELS = tuple(sorted({f.__name__ for f, _ in KERNELS} - {"k_zero_f64"}))

__all__ = [
    "BK", "BM", "BN", "GEMM_KERNELS", "KERNELS", "MIN_SLICE_STEPS", "NTHREADS", "OPT_ADAM",
    "OPT_MOMENTUM", "OPT_NESTEROV", "OPT_NONE", "OPT_SGD", "PIXEL_SCALE", "SIMULATOR", "TILE",
    "TM", "TN", "SplitK", "activation_loss_kernels", "adam_hparams", "adam_hparams_steps",
    "adam_weight_step", "backward_activation", "backward_hidden", "compile_all", "compile_ptx",
    "empty", "hparams", "launch_weight_step", "linear_activation", "linear_leaky_relu",
    "linear_sigmoid", "linear_sigmoid_loss_grad", "linear_sigmoid_mse", "momentum_weight_step",
    "sgd_weight_step", "weight_grad", "weight_step", "zero_", "zero_kernel",
]
