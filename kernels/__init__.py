"""The fused training kernels, three faces each.

* ``reference`` — float64 NumPy: the definition of every kernel.
* ``cpu``       — float32, BLAS sgemm + ``@njit`` epilogues (``blas`` calls sgemm from @njit).
* ``cuda``      — float32, hand-written Numba CUDA tiled GEMMs with fused epilogues.

Kernel names are the same in all three: ``linear_leaky_relu`` (matmul + bias + LeakyReLU),
``linear_sigmoid`` / ``linear_sigmoid_mse`` (matmul + bias + Sigmoid, + MSE gradient),
``backward_hidden``, ``weight_grad`` / ``sgd_weight_step``, ``sgd_update``, ``adam_update``.
``kernels.cuda`` is imported on demand (it needs numba-cuda).
"""
