"""The IDX files of Fashion-MNIST: what the four files are, and parsing and validating one.

``decode_idx(raw, name, kind, count=None, sha256=None)`` parses the bytes of one file
(gzip-compressed or not) and ``read_idx(path, kind, ...)`` reads one from disk: each returns a
uint8 array (images (n, 784), labels (n,)) or raises :class:`aecore.errors.DataError`, one line
naming the file. Checked: IDX magic, data type, dimensions, exact length, label range, and the
sha256 of the *decompressed* content (so re-packed .gz files pass too).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from .errors import DataError

__all__ = ["CLASS_NAMES", "OFFICIAL_FILES", "DatasetFiles", "FileSpec", "decode_idx", "read_idx"]

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

ROWS = COLS = 28
IMAGE_PIXELS = ROWS * COLS
N_CLASSES = len(CLASS_NAMES)

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_IDX_NDIM = {"images": 3, "labels": 1}
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}

Kind = Literal["images", "labels"]


@dataclass(frozen=True)
class FileSpec:
    """One dataset file: its name (without ``.gz``), what it holds and how to verify it.

    ``sha256`` is of the decompressed content (None: not checked); ``md5`` of the official
    ``.gz`` (checked only for downloads from the official mirror, or when asked to).
    ``count`` is the number of images / labels it must hold (None: any).
    """

    name: str
    kind: Kind
    count: int | None
    sha256: str | None
    md5: str | None = None


class DatasetFiles(NamedTuple):
    """The four files of the dataset. ``OFFICIAL_FILES`` is Fashion-MNIST's; tests build
    their own (small counts, their own checksums) and pass it as ``files=``."""

    train_images: FileSpec
    train_labels: FileSpec
    test_images: FileSpec
    test_labels: FileSpec


OFFICIAL_FILES = DatasetFiles(
    FileSpec(
        "train-images-idx3-ubyte",
        "images",
        60000,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    FileSpec(
        "train-labels-idx1-ubyte",
        "labels",
        60000,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "25c81989df183df01b3e8a0aad5dffbe",
    ),
    FileSpec(
        "t10k-images-idx3-ubyte",
        "images",
        10000,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "bef4ecab320f06d8554ea6380940ec79",
    ),
    FileSpec(
        "t10k-labels-idx1-ubyte",
        "labels",
        10000,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
)


def decode_idx(
    raw: bytes,
    name: str,
    kind: Kind,
    *,
    count: int | None = None,
    sha256: str | None = None,
) -> np.ndarray:
    """Parse the bytes of one IDX file (gzip-compressed or not) and validate them.

    ``name`` is only used to name the file in errors (and a ``.gz`` name must be gzip).
    ``kind`` is ``"images"`` (IDX3, 28x28, returns uint8 (n, 784)) or ``"labels"`` (IDX1,
    values 0..9, returns uint8 (n,)). ``count``: the number of items it must hold (None: any).
    ``sha256``: the expected sha256 of the decompressed content (None: not verified).
    Raises DataError (one line naming ``name``) for anything wrong; nothing else.
    """
    if kind not in _IDX_NDIM:
        raise ValueError(f"kind must be 'images' or 'labels', not {kind!r}")

    def bad(what: str) -> DataError:
        return DataError(f"{name}: {what}")

    if raw[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error, ValueError) as e:  # BadGzipFile is an OSError
            raise bad(f"corrupt gzip data ({one_line(e)})") from None
    elif name.endswith(".gz"):
        raise bad("named .gz but is not gzip-compressed (no gzip magic bytes)")
    else:
        data = raw

    expected_label = "labels (IDX1)" if kind == "labels" else "images (IDX3)"
    if len(data) < 4:
        raise bad(f"truncated: {len(data)} bytes, too short for an IDX header")
    b0, b1, dtype, ndim = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if b0 != 0 or b1 != 0:
        raise bad(f"not an IDX file (magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[kind]:08x})")
    if dtype != _UBYTE:
        raise bad(f"IDX data type 0x{dtype:02x} is not unsigned byte (0x08)")
    if ndim != _IDX_NDIM[kind]:
        other = {1: "a labels file (IDX1)", 3: "an images file (IDX3)"}.get(ndim)
        if other:
            raise bad(f"is {other} but {expected_label} was expected")
        raise bad(f"unexpected IDX magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[kind]:08x}")

    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise bad(f"truncated: {len(data)} bytes, shorter than its {header_len}-byte IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    n = dims[0]
    if kind == "images" and (dims[1], dims[2]) != (ROWS, COLS):
        raise bad(f"images are {dims[1]}x{dims[2]}, expected {ROWS}x{COLS}")
    if count is not None and n != count:
        raise bad(f"holds {n} {kind}, expected {count}")
    item = IMAGE_PIXELS if kind == "images" else 1
    expected_len = header_len + n * item
    if len(data) < expected_len:
        raise bad(f"truncated: {len(data)} bytes, expected {expected_len} for {n} {kind}")
    if len(data) > expected_len:
        raise bad(f"{len(data) - expected_len} trailing bytes after the {n} {kind}")

    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256.lower():
            raise bad(
                f"sha256 of the decompressed content is {digest}, expected {sha256} "
                "(corrupt, or not the official file)"
            )

    arr = np.frombuffer(data, dtype=np.uint8, offset=header_len)
    if kind == "images":
        return arr.reshape(n, IMAGE_PIXELS)
    if n and int(arr.max()) >= N_CLASSES:
        raise bad(f"label value {int(arr.max())} is out of range 0..{N_CLASSES - 1}")
    return arr


def read_idx(
    path: str | os.PathLike,
    kind: Kind,
    *,
    count: int | None = None,
    sha256: str | None = None,
) -> np.ndarray:
    """Read and validate one IDX file (``.gz`` or raw); see :func:`decode_idx`.

    The returned array is read-only (a view of the file's bytes); index or ``.copy()`` it.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from None
    return decode_idx(raw, str(path), kind, count=count, sha256=sha256)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(e).split()) or type(e).__name__
