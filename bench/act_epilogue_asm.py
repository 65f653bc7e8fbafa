"""x86 assembly statistics of the default configuration's four CPU epilogue loops, for a
before/after comparison of code versions (run as bench/act_epoch_time.py says, each with an
empty ``NUMBA_CACHE_DIR``: numba cannot inspect code loaded from its cache). Before issue 18 the
loops were bias_leaky_relu_ & co.; after, the generic functions specialised for leaky_relu / mse.
"""
import numpy as np

from aecore.kernels import cpu as K

f32 = np.float32
Z, b, T = np.zeros((3, 5), f32), np.zeros(5, f32), np.zeros((3, 5), np.uint8)
K.bias_leaky_relu_(Z, b, f32(0.01))
K.leaky_relu_grad_(Z, Z, f32(0.01), np.zeros(5))
K.bias_sigmoid_mse_(Z, b, T, 0.1, np.zeros((0, 5), f32), np.zeros(5))
K.bias_sigmoid_loss(Z, b, T)
new = hasattr(K, "bias_activation_")
pairs = [("bias_leaky_relu_", "bias_activation_"), ("leaky_relu_grad_", "activation_grad_"),
         ("bias_sigmoid_mse_", "bias_sigmoid_loss_"), ("bias_sigmoid_loss", "bias_sigmoid_eval_")]
for old, gen in pairs:
    fn = getattr(K, gen if new else old)
    asm = list(fn.inspect_asm().values())[0]
    body = [l.split("#")[0].strip() for l in asm.splitlines()]
    ins = [l for l in body if l and not l.startswith(".") and not l.endswith(":")]
    ops = [l.split()[0] for l in ins if l.split()[0].startswith("v")]  # vector instructions
    print(old, "instructions", len(ins), "vector ops", len(ops),
          "vfmadd", sum("fmadd" in o for o in ops), "kinds:", " ".join(sorted(set(ops))))
