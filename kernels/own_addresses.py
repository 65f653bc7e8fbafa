"""Where the halves of the own step (``kernels.own_step``) find their data: a half's block of
columns of dZ and dH, one row of a matrix as a contiguous view, and each half's share of a
column sum on pages of its own. Addresses are int64 (the step's blocks hold them)."""

from __future__ import annotations

from numba import carray, njit

from .blas_pair import _f32p, _f64p


@njit(inline="always")
def own_columns(addr, nb, cols, c0, c1, by_rows):
    """(address of column c0 in row 0, row stride) of a float32 matrix of nb rows (dZ, dH) at
    ``addr``, whose columns [c0, c1) a half writes. By the batch rows: the (nb, cols) matrix.
    By the weights' rows only that half reads or writes those columns, so each half's are a
    block of their own, (nb, c1 - c0) at ``addr + 4 nb c0`` (c0 a multiple of 32: on a line).
    In the rows both halves wrote, one half's stores drew the other's lines away (the output
    phase at h=128 B=64, both halves at once: 56.6 us against 46.4 with dZ's columns apart;
    bench/RESULTS.md, session 20)."""
    if by_rows:
        return addr + 4 * c0, cols
    return addr + 4 * nb * c0, c1 - c0


@njit(inline="always")
def row_view(addr, i, ld, j0, j1):
    """Row i, columns [j0, j1) of the float32 matrix at ``addr`` (row stride ``ld``) as a
    C-contiguous (1, j1 - j0) view. A column slice M[:, j0:j1] has numba's "A" layout, whose
    runtime strides kept the epilogues' loops scalar: 5-10x slower (bench/RESULTS.md,
    session 17)."""
    return carray(_f32p(addr + 4 * (i * ld + j0)), (1, j1 - j0))


@njit(cache=True, inline="always")
def pages(count):
    """``count`` float64 rounded up to whole 4 KB pages (512 float64)."""
    return (count + 511) // 512 * 512


@njit(inline="always")
def share(addr, count, t):
    """Half t's share (count float64) of a column sum kept at ``addr`` (``scratch``'s db1,
    db2), each half's on pages of its own, at the same offset in them. Split by the batch
    rows both halves add a row to every column of their share, row after row; side by side,
    the line where the two shares met went back and forth between the cores at every row.
    db2's shares also sit at b2's offset in its page (``train_steps``): the output epilogue
    loads b2 right after adding a row to its share, and where a load's address matched a
    pending store's in its low 12 bits it waited for it (4K aliasing: one half's epilogue
    took 57 us against the other's 47 at h=128 B=256; bench/RESULTS.md, session 19)."""
    return carray(_f64p(addr + 8 * t * pages(count)), (count,))
