"""Every CUDA op gives, bit for bit, the outputs the kernels gave before the GEMM-core rewrite.

``tests/data/cuda_golden.npz`` holds inputs and outputs of each public launcher (kernels 1-3
with and without split-K, uint8 / float32 operands, rows gathered or not, every optimizer of
the fused weight step), saved from the kernels of commit effbbb7 run in Numba's simulator.
A rewrite that keeps each output element's summation order keeps every bit; this test says
which op and how many elements moved if one does not.

Regenerate (only when a change of results is intended and explained):
``NUMBA_ENABLE_CUDASIM=1 python tests/test_cuda_golden.py --write``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

if __name__ != "__main__":
    from conftest import cuda_or_skip

    cuda_or_skip()

from numba import cuda  # noqa: E402

from aecore.kernels import cuda as kc  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "cuda_golden.npz"
SEED = 20261202
FULL = 75  # rows of the gathered sources


def _dev(x):
    return None if x is None else cuda.to_device(x)


def _perm(inp):
    return _dev(inp.get("perm"))


def _llr(inp, splits):
    H = cuda.to_device(np.full(inp["shape_out"], np.nan, np.float32))
    sk = kc.SplitK(splits=splits, capacity=1 << 16, max_tiles=16) if splits else None
    kc.linear_leaky_relu(_dev(inp["X"]), _dev(inp["W"]), _dev(inp["b"]), H,
                         float(inp["slope"]), perm=_perm(inp), off=int(inp["off"]), splitk=sk)
    return {"H": H.copy_to_host()}


def _lsm(inp, splits):
    dZ = cuda.to_device(np.full(inp["shape_out"], np.nan, np.float32))
    Y = cuda.to_device(np.full(inp["shape_out"], np.nan, np.float32)) if inp["write_y"] \
        else None
    loss = cuda.to_device(np.array([0.5], np.float64))
    sk = kc.SplitK(splits=splits, capacity=1 << 16, max_tiles=16) if splits else None
    kc.linear_sigmoid_mse(_dev(inp["H"]), _dev(inp["W"]), _dev(inp["b"]), _dev(inp["T"]), dZ,
                          loss, Y=Y, perm=_perm(inp), off=int(inp["off"]), splitk=sk)
    out = {"dZ": dZ.copy_to_host(), "loss": loss.copy_to_host()}
    if Y is not None:
        out["Y"] = Y.copy_to_host()
    return out


def _ls(inp, splits):
    Y = cuda.to_device(np.full(inp["shape_out"], np.nan, np.float32))
    kc.linear_sigmoid(_dev(inp["H"]), _dev(inp["W"]), _dev(inp["b"]), Y)
    return {"Y": Y.copy_to_host()}


def _bh(inp, splits):
    dH = cuda.to_device(np.full(inp["H"].shape, np.nan, np.float32))
    sk = kc.SplitK(splits=splits, capacity=1 << 16, max_tiles=16) if splits else None
    kc.backward_hidden(_dev(inp["dZ"]), _dev(inp["W2"]), _dev(inp["H"]), dH,
                       float(inp["slope"]), splitk=sk)
    return {"dH": dH.copy_to_host()}


def _step(inp, kind):
    dZ, A, perm, off = _dev(inp["dZ"]), _dev(inp["A"]), _perm(inp), int(inp["off"])
    if kind == "grad":
        G = cuda.to_device(np.full(inp["W"].shape, np.nan, np.float32))
        gb = cuda.to_device(np.full(inp["b"].shape, np.nan, np.float32))
        kc.weight_grad(dZ, A, G, gb, perm=perm, off=off)
        return {"G": G.copy_to_host(), "gb": gb.copy_to_host()}
    W, b = _dev(inp["W"]), _dev(inp["b"])
    st = {k: _dev(inp[k]) for k in ("VW", "Vb", "MW", "Mb") if k in inp}
    lr = float(inp["lr"])
    if kind == "sgd":
        kc.sgd_weight_step(dZ, A, W, b, lr, perm=perm, off=off)
    elif kind in ("momentum", "nesterov"):
        kc.momentum_weight_step(dZ, A, W, b, st["VW"], st["Vb"], lr, 0.9, kind == "nesterov",
                                perm=perm, off=off)
    else:
        hp = cuda.to_device(kc.adam_hparams(lr, 3, 0.9, 0.999, 1e-8))
        kc.adam_weight_step(dZ, A, W, b, st["MW"], st["Mb"], st["VW"], st["Vb"], hp, perm=perm,
                            off=off)
    return {"W": W.copy_to_host(), "b": b.copy_to_host(),
            **{k: v.copy_to_host() for k, v in st.items()}}


# name: (runner, its argument, (B, K, N) or (B, N, K), pixel dtype, gathered, extras)
CASES = {
    "llr_u8_gather_split3": (_llr, 3, (37, 100, 70), "u8", True),
    "llr_u8_plain": (_llr, 0, (70, 100, 70), "u8", False),
    "llr_f32_gather": (_llr, 0, (37, 40, 9), "f32", True),
    "llr_f32_plain_split2": (_llr, 2, (5, 100, 70), "f32", False),
    "lsm_u8_gather_y_split2": (_lsm, 2, (37, 50, 70), "u8", True),
    "lsm_f32_plain": (_lsm, 0, (70, 50, 70), "f32", False),
    "lsm_u8_plain_y": (_lsm, 0, (5, 13, 9), "u8", False),
    "ls": (_ls, 0, (37, 50, 70), "f32", False),
    "bh_split3": (_bh, 3, (37, 100, 70), "f32", False),
    "bh": (_bh, 0, (70, 50, 70), "f32", False),
    "grad_u8_gather": (_step, "grad", (37, 70, 100), "u8", True),
    "grad_f32_plain": (_step, "grad", (70, 70, 13), "f32", False),
    "grad_f32_gather": (_step, "grad", (5, 9, 70), "f32", True),
    "grad_u8_plain": (_step, "grad", (37, 9, 13), "u8", False),
    "sgd_u8_gather": (_step, "sgd", (37, 70, 100), "u8", True),
    "momentum_f32_plain": (_step, "momentum", (70, 70, 13), "f32", False),
    "nesterov_u8_plain": (_step, "nesterov", (5, 9, 70), "u8", False),
    "adam_f32_gather": (_step, "adam", (37, 70, 40), "f32", True),
    "adam_u8_gather": (_step, "adam", (70, 13, 100), "u8", True),
}


def _operand(rng, shape, dtype):
    if dtype == "u8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32)


def _weights(rng, shape, scale):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def make_inputs(rng, name):
    """Host inputs of one case (only used to write the fixture)."""
    run, arg, (B, P, Q), dtype, gather = CASES[name]
    inp = {"off": np.array(0), "slope": np.array(rng.choice([0.01, 0.2]))}

    def rows(shape_row, make):
        if not gather:  # rows off.. of a taller source (as evaluation reads them)
            inp["off"] = np.array(3)
            return make((B + 3, shape_row))
        perm = rng.permutation(FULL).astype(np.int64)
        inp["perm"] = perm
        inp["off"] = np.array(int(rng.integers(0, FULL - B + 1)))
        return make((FULL, shape_row))

    if run is _llr:  # X (B, K=P) W (N=Q, K)
        inp["X"] = rows(P, lambda s: _operand(rng, s, dtype))
        inp["W"] = _weights(rng, (Q, P), 1 / np.sqrt(P))
        inp["b"] = _weights(rng, (Q,), 0.3)
        inp["shape_out"] = np.array([B, Q])
    elif run in (_lsm, _ls):  # H (B, K=P) W (N=Q, K)
        inp["H"] = (rng.standard_normal((B, P)) * 2).astype(np.float32)
        inp["W"] = _weights(rng, (Q, P), 2 / np.sqrt(P))
        inp["b"] = _weights(rng, (Q,), 1.0)
        inp["shape_out"] = np.array([B, Q])
        if run is _lsm:
            inp["T"] = rows(Q, lambda s: _operand(rng, s, dtype))
            inp["write_y"] = np.array(name.find("_y") > 0)
    elif run is _bh:  # dZ (B, N=P) W2 (N, K=Q) H (B, K)
        inp["dZ"] = rng.standard_normal((B, P)).astype(np.float32)
        inp["W2"] = _weights(rng, (P, Q), 1 / np.sqrt(Q))
        inp["H"] = rng.standard_normal((B, Q)).astype(np.float32)
        inp["H"][0, :3] = 0.0
    else:  # dZ (B, N=P), A (B, K=Q), W (N, K)
        inp["dZ"] = (rng.standard_normal((B, P)) * 0.1).astype(np.float32)
        inp["A"] = rows(Q, lambda s: _operand(rng, s, dtype))
        inp["W"] = _weights(rng, (P, Q), 1 / np.sqrt(Q))
        inp["b"] = _weights(rng, (P,), 0.1)
        inp["lr"] = np.array(1e-2 if arg == "adam" else 0.3)
        if arg in ("momentum", "nesterov", "adam"):
            inp["VW"] = (rng.random(P * Q) * 1e-4).astype(np.float32)
            inp["Vb"] = (rng.random(P) * 1e-4).astype(np.float32)
        if arg == "adam":
            inp["MW"] = (rng.standard_normal(P * Q) * 1e-2).astype(np.float32)
            inp["Mb"] = (rng.standard_normal(P) * 1e-2).astype(np.float32)
    return inp


def run_case(name, inp):
    run, arg = CASES[name][:2]
    return run(inp, arg)


def _widen(inp):
    """The inputs as the kernels take them: float inputs are stored as float16 (half the
    fixture; their products still round in float32, so summation order still shows)."""
    return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in inp.items()}


def _load():
    with np.load(FIXTURE) as z:
        flat = dict(z)
    out = {}
    for key, v in flat.items():
        case, part, name = key.split("/")
        out.setdefault(case, {"in": {}, "out": {}})[part][name] = v
    for case in out.values():
        case["in"] = _widen(case["in"])
    return out


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view({4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_equal_the_saved_ones_bit_for_bit(name):
    saved = _load()[name]
    got = run_case(name, saved["in"])
    assert set(got) == set(saved["out"])
    for key, ref in saved["out"].items():
        a = got[key]
        assert a.dtype == ref.dtype and a.shape == ref.shape, (key, a.dtype, a.shape)
        moved = int(np.count_nonzero(_bits(a) != _bits(ref)))
        assert moved == 0, f"{name}: {moved} of {a.size} elements of {key} differ"


def test_the_fixture_covers_every_case_and_stays_small():
    assert set(_load()) == set(CASES)
    assert FIXTURE.stat().st_size < 1 << 20


def write_fixture():
    rng = np.random.default_rng(SEED)
    flat = {}
    for name in CASES:
        inp = {k: v.astype(np.float16) if v.dtype == np.float32 else v
               for k, v in make_inputs(rng, name).items()}
        out = run_case(name, _widen(inp))
        assert all(np.isfinite(v).all() for v in out.values()), name
        flat.update({f"{name}/in/{k}": np.asarray(v) for k, v in inp.items()})
        flat.update({f"{name}/out/{k}": v for k, v in out.items()})
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURE, **flat)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes, {len(CASES)} cases)")


if __name__ == "__main__" and "--write" in sys.argv:
    write_fixture()
