"""The fused training kernels, three faces each.

* ``reference`` — float64 NumPy: the definition of every kernel.
* ``cpu``       — float32, BLAS sgemm + ``@njit`` epilogues (``blas`` calls sgemm from @njit).
* ``cuda``      — float32, Numba CUDA tiled GEMMs (one generated main loop, ``cuda/gemm.py``)
  with fused epilogues, one module per op.

Kernel names are the same in all three: ``linear_leaky_relu`` (matmul + bias + LeakyReLU),
``linear_sigmoid`` / ``linear_sigmoid_mse`` (matmul + bias + Sigmoid, + MSE gradient),
``backward_hidden``, ``weight_grad`` / ``sgd_weight_step``; ``reference`` and ``cpu`` also
have the elementwise ``sgd_update``, ``adam_update`` (CUDA fuses every update into
``weight_step``); ``cpu`` and ``cuda`` have ``weight_step`` (one layer's optimizer step, any
optimizer).
``optim`` holds what they share about optimizers: kind codes and hyper-parameter slots.
``kernels.cuda`` is imported on demand (it needs numba-cuda).
"""

PIXEL_SCALE = 1.0 / 255.0  # uint8 pixel value -> [0, 1], in every face of every kernel

# Before any @njit(cache=True) function is defined: cached functions are keyed by all of the
# package's compiled sources, not only their own file (kernels/jit_cache.py says why).
from . import jit_cache  # noqa: E402,F401
