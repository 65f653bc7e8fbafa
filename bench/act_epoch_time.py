"""CPU seconds per training sample of the default configuration (leaky_relu, mse, Adam, batch 64)
on the first 12,800 Fashion-MNIST training images, h = 64 and 256: min / median of 3 epochs.

Compare two code versions by running it in alternating processes, e.g. the tree of a commit
unpacked as a package (``git archive C aecore kernels | tar -x -C /tmp/base/pkg`` and
``mv /tmp/base/pkg/kernels /tmp/base/pkg/aecore/``) with ``PYTHONPATH=/tmp/base/pkg``, and this
checkout without. Needs a quiet host (bench/RESULTS.md, "Activations and losses in the engines").
"""
import gzip, sys, time
import numpy as np
import aecore
from aecore.devices import make_engine
from aecore.model import init_params
from aecore.optim import OptimConfig

N = 12800
DATA = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/fashion-mnist"
with gzip.open(f"{DATA}/train-images-idx3-ubyte.gz") as f:
    X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:N].copy()
out = []
for h in (64, 256):
    eng = make_engine("cpu", init_params(h, 0), OptimConfig("adam", lr=1e-3), 64)
    d = eng.put(X)
    rng = np.random.default_rng(0)
    eng.train_steps(d, rng.permutation(N), 0, 640)  # compile / warm
    best = []
    for _ in range(3):
        perm = rng.permutation(N).astype(np.int64)
        t = time.perf_counter()
        eng.train_steps(d, perm, 0, N)
        eng.take_loss_sum()
        best.append(time.perf_counter() - t)
    out.append(f"h={h} {min(best) / N * 1e6:.2f} us/sample (median {np.median(best) / N * 1e6:.2f})")
print(aecore.__file__.split("/aecore/")[0], " | ".join(out))
