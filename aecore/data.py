"""Fashion-MNIST: find it, download it if it is missing, parse and validate it, split it.

Public API
----------
``load_fashion_mnist(data_dir=None, val_size=10000, seed=0, download=True, progress=True)``
    -> :class:`FashionMNIST` with ``train`` / ``val`` / ``test`` splits (uint8 images (n, 784),
    uint8 labels (n,)), ``source`` (where the files came from) and ``class_names``.
``find_data(data_dir=None)`` -> the directory the data would be loaded from, or None
    (it would have to be downloaded); never downloads.
``read_idx(path, kind, count=None, sha256=None)`` / ``decode_idx(raw, name, kind, ...)``
    -> one validated IDX file as a uint8 array.
``download_fashion_mnist(dest_dir, mirror=None, ...)`` -> the downloaded, verified files.

Where the data is looked for, in order:

1. ``data_dir`` (the CLI's ``--data-dir``), else ``$AECORE_DATA``. A directory given this way
   is used as is: missing or bad files there are an error naming it, never a silent fallback.
2. The user cache, ``platformdirs.user_cache_dir("aecore")/fashion-mnist``.
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package).
4. Otherwise the four files are downloaded from the official mirror (``$AECORE_MIRROR``
   overrides it) into the cache, verified, and written atomically (temp file + os.replace).

In every directory a file may be ``name.gz`` or the decompressed ``name``. Each file is
validated (IDX magic, dtype, dimensions, exact length) and its *decompressed* content is
checked against the official sha256, so Debian's re-packed .gz files pass too. A corrupt file
in the cache is reported and downloaded again over; it is never used.

Every problem is a :class:`aecore.errors.DataError` whose message is one line naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from aecore.errors import DataError

__all__ = [
    "CLASS_NAMES",
    "OFFICIAL_FILES",
    "OFFICIAL_MIRROR",
    "SYSTEM_DATA_DIR",
    "DatasetFiles",
    "FashionMNIST",
    "FileSpec",
    "InvalidSplitError",
    "Split",
    "decode_idx",
    "default_cache_dir",
    "download_fashion_mnist",
    "find_data",
    "load_fashion_mnist",
    "read_idx",
    "split_train_val",
]

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

OFFICIAL_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
ENV_DATA = "AECORE_DATA"
ENV_MIRROR = "AECORE_MIRROR"

ROWS = COLS = 28
IMAGE_PIXELS = ROWS * COLS
N_CLASSES = len(CLASS_NAMES)

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_IDX_NDIM = {"images": 3, "labels": 1}
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}

Kind = Literal["images", "labels"]
# progress callback: (file name, bytes received so far, total bytes or None if unknown)
ProgressCallback = Callable[[str, int, "int | None"], None]


class InvalidSplitError(DataError, ValueError):
    """``val_size`` cannot be used (negative, or leaves no training images)."""


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


# --------------------------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------------------------


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
            raise bad(f"corrupt gzip data ({_one_line(e)})") from None
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
        raise DataError(f"{path}: cannot read ({_one_line(e)})") from None
    return decode_idx(raw, str(path), kind, count=count, sha256=sha256)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


# --------------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The user cache directory downloads go to: ``user_cache_dir("aecore")/fashion-mnist``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("aecore")) / "fashion-mnist"


def _file_in(directory: Path, spec: FileSpec) -> Path | None:
    """``name.gz`` or raw ``name`` in ``directory`` (the .gz first), or None."""
    for candidate in (directory / f"{spec.name}.gz", directory / spec.name):
        if candidate.is_file():
            return candidate
    return None


class _Scan(NamedTuple):
    """What one directory holds: valid arrays, bad files (with their error), missing specs."""

    arrays: dict[int, np.ndarray]
    paths: dict[int, Path]
    bad: dict[int, DataError]
    missing: list[int]

    @property
    def complete(self) -> bool:
        return not self.bad and not self.missing


def _scan_dir(directory: Path, files: DatasetFiles) -> _Scan:
    """Load and validate whichever of the four files ``directory`` holds."""
    paths = {i: p for i, spec in enumerate(files) if (p := _file_in(directory, spec)) is not None}
    missing = [i for i in range(len(files)) if i not in paths]

    def load(i: int) -> tuple[int, np.ndarray | DataError]:
        spec = files[i]
        try:
            return i, read_idx(paths[i], spec.kind, count=spec.count, sha256=spec.sha256)
        except DataError as e:
            return i, e

    # zlib and sha256 release the GIL: decompress the files side by side.
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(paths), os.cpu_count() or 1))) as pool:
        results = list(pool.map(load, sorted(paths)))
    arrays = {i: r for i, r in results if isinstance(r, np.ndarray)}
    bad = {i: r for i, r in results if isinstance(r, DataError)}
    if not bad and not missing:
        _check_pairs([arrays[i] for i in range(len(files))], [paths[i] for i in range(len(files))])
    return _Scan(arrays, paths, bad, missing)


def _check_pairs(arrays: list[np.ndarray], paths: list[Path]) -> None:
    for i, j in ((0, 1), (2, 3)):
        if len(arrays[i]) != len(arrays[j]):
            raise DataError(
                f"{paths[i]}: holds {len(arrays[i])} images but {paths[j].name} "
                f"holds {len(arrays[j])} labels"
            )


def _explicit_dir(data_dir: str | os.PathLike | None) -> tuple[Path, str] | None:
    if data_dir is not None:
        return Path(data_dir), "--data-dir"
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env), ENV_DATA
    return None


def _load_explicit(directory: Path, how: str, files: DatasetFiles) -> list[np.ndarray]:
    """All four arrays from a directory the user named, or a DataError naming it."""
    if not directory.is_dir():
        raise DataError(f"{directory} (from {how}): no such directory")
    scan = _scan_dir(directory, files)
    if scan.bad:
        raise scan.bad[min(scan.bad)]
    if scan.missing:
        names = ", ".join(f"{files[i].name}[.gz]" for i in scan.missing)
        raise DataError(f"{directory} (from {how}): missing {names}")
    return [scan.arrays[i] for i in range(len(files))]


def _auto_dirs(cache_dir, system_dir) -> tuple[Path, Path]:
    return (
        Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        Path(system_dir) if system_dir is not None else SYSTEM_DATA_DIR,
    )


def find_data(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    system_dir: str | os.PathLike | None = None,
    files: DatasetFiles = OFFICIAL_FILES,
) -> Path | None:
    """The directory :func:`load_fashion_mnist` would read, or None if it would download.

    Never downloads. The files are validated (as loading would), so a corrupt cache is not
    reported as found. An explicit ``data_dir`` / ``$AECORE_DATA`` that is missing or bad
    raises DataError, as loading would.
    """
    explicit = _explicit_dir(data_dir)
    if explicit is not None:
        _load_explicit(*explicit, files)
        return explicit[0]
    for directory in _auto_dirs(cache_dir, system_dir):
        try:
            if directory.is_dir() and _scan_dir(directory, files).complete:
                return directory
        except DataError:
            continue
    return None


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def _mirror(mirror: str | None) -> str:
    return (mirror or os.environ.get(ENV_MIRROR) or OFFICIAL_MIRROR).rstrip("/")


class _ClickProgress:
    """A click progress bar on stderr, one per file (total from Content-Length)."""

    def __init__(self) -> None:
        self._bar = None
        self._name = None
        self._done = 0

    def __call__(self, name: str, done: int, total: int | None) -> None:
        import click

        if name != self._name:
            self.close()
            self._name, self._done = name, 0
            self._bar = click.progressbar(
                length=total or 0, label=f"Downloading {name}", file=sys.stderr, width=30
            )
            self._bar.__enter__()
        if total:
            self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _fetch_one(
    url: str,
    dest: Path,
    spec: FileSpec,
    *,
    check_md5: bool,
    progress: ProgressCallback | None,
    timeout: float,
) -> np.ndarray:
    """Download ``url`` to ``dest`` atomically and return its validated array.

    The bytes go to a temp file beside ``dest``; only a complete, verified file is moved over
    ``dest`` with os.replace. On any failure (KeyboardInterrupt included) the temp file is
    removed, so nothing half-written is ever left.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        md5 = hashlib.md5()
        chunks = []
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    done = 0
                    if progress:
                        progress(dest.name, 0, total)
                    while True:
                        chunk = resp.read(1 << 16)
                        if not chunk:
                            break
                        out.write(chunk)
                        md5.update(chunk)
                        chunks.append(chunk)
                        done += len(chunk)
                        if progress:
                            progress(dest.name, done, total)
            except urllib.error.HTTPError as e:
                raise DataError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                raise DataError(f"{url}: download failed ({_one_line(reason)})") from None
            if total is not None and done != total:
                raise DataError(
                    f"{url}: download incomplete, got {done} of {total} bytes (connection dropped?)"
                )
            out.flush()
            os.fsync(out.fileno())
        raw = b"".join(chunks)
        if check_md5 and spec.md5 is not None and md5.hexdigest() != spec.md5:
            raise DataError(
                f"{url}: md5 of the download is {md5.hexdigest()}, expected {spec.md5} (corrupt download)"
            )
        try:
            arr = decode_idx(raw, dest.name, spec.kind, count=spec.count, sha256=spec.sha256)
        except DataError as e:
            raise DataError(f"{url}: downloaded file is bad: {e}") from None
        os.replace(tmp, dest)
        return arr
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download_fashion_mnist(
    dest_dir: str | os.PathLike,
    *,
    mirror: str | None = None,
    files: DatasetFiles = OFFICIAL_FILES,
    only: list[FileSpec] | None = None,
    progress: bool | ProgressCallback = True,
    check_md5: bool | None = None,
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:
    """Download the dataset's ``.gz`` files from ``mirror`` into ``dest_dir``, verified.

    ``mirror``: base URL (files at ``<mirror>/<name>.gz``); default ``$AECORE_MIRROR`` or the
    official one. ``only``: download just these specs (default: all four). ``progress``:
    True for a click progress bar on stderr, False for none, or a callback
    ``(name, bytes_so_far, total_or_None)``. ``check_md5``: compare the .gz md5 with the
    official one (default: only when the mirror is the official one, whose files are exactly
    those). The decompressed sha256 is always checked (when the spec has one).
    Returns {file name: validated array}. Raises DataError naming the URL on any failure.
    """
    base = _mirror(mirror)
    if check_md5 is None:
        check_md5 = base == OFFICIAL_MIRROR
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest_dir}: cannot create the download directory ({_one_line(e)})") from None
    bar = _ClickProgress() if progress is True else None
    callback = bar if bar is not None else (progress or None)
    out = {}
    try:
        for spec in only if only is not None else files:
            url = f"{base}/{spec.name}.gz"
            out[spec.name] = _fetch_one(
                url, dest_dir / f"{spec.name}.gz", spec,
                check_md5=check_md5, progress=callback, timeout=timeout,
            )
    finally:
        if bar is not None:
            bar.close()
    return out


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (n, 784) C-contiguous, ``labels`` uint8 (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FashionMNIST:
    """The loaded dataset. ``source`` says where it came from (a directory, or
    "downloaded to DIR from URL"); ``path`` is that directory."""

    train: Split
    val: Split
    test: Split
    source: str
    path: Path
    class_names: tuple[str, ...] = field(default=CLASS_NAMES)
    seed: int = 0
    val_size: int = 10000


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_size: int = 10000, seed: int = 0
) -> tuple[Split, Split]:
    """Split the training set by a seeded permutation: the first ``val_size`` indices of
    ``default_rng(seed).permutation(n)`` are the validation set, the rest the training set
    (each kept in file order). Both are fresh C-contiguous copies."""
    n = len(labels)
    _check_val_size(val_size, n)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(perm[:val_size])
    train_idx = np.sort(perm[val_size:])
    return (
        Split(np.ascontiguousarray(images[train_idx]), np.ascontiguousarray(labels[train_idx])),
        Split(np.ascontiguousarray(images[val_idx]), np.ascontiguousarray(labels[val_idx])),
    )


def _not_found_message(searched: list[str], cause: str, cache: Path) -> str:
    return (
        f"Fashion-MNIST not found (searched: {'; '.join(searched)}) and {cause}. "
        f"Options: pass --data-dir DIR or set {ENV_DATA}=DIR (a directory holding the four "
        "files), or `apt install dataset-fashion-mnist`, or connect to the internet to download "
        f"them to {cache}"
    )


def _warn(msg: str) -> None:
    print(f"aecore: warning: {msg}", file=sys.stderr)


def _resolve(
    data_dir, *, cache_dir, system_dir, files, download, mirror, progress
) -> tuple[list[np.ndarray], Path, str]:
    explicit = _explicit_dir(data_dir)
    if explicit is not None:
        return _load_explicit(*explicit, files), explicit[0], str(explicit[0])

    cache, system = _auto_dirs(cache_dir, system_dir)
    searched = [f"{ENV_DATA} (unset)"]

    # The cache: used if complete and valid; a corrupt file there is reported, never used.
    if cache.is_dir():
        scan = _scan_dir(cache, files)
        for e in scan.bad.values():
            _warn(f"ignoring corrupt cached file, it will be downloaded again: {e}")
        if scan.complete:
            return [scan.arrays[i] for i in range(len(files))], cache, str(cache)
        problems = [f"{files[i].name} corrupt" for i in scan.bad]
        problems += [f"no {files[i].name}" for i in scan.missing]
        searched.append(f"{cache} ({', '.join(problems)})")
    else:
        scan = _Scan({}, {}, {}, list(range(len(files))))
        searched.append(f"{cache} (no such directory)")

    # Debian's dataset-fashion-mnist.
    if system.is_dir():
        try:
            sys_scan = _scan_dir(system, files)
        except DataError as e:
            sys_scan = _Scan({}, {}, {0: e}, [])
        if sys_scan.complete:
            return [sys_scan.arrays[i] for i in range(len(files))], system, str(system)
        for e in sys_scan.bad.values():
            _warn(f"ignoring {system}: {e}")
        problems = [f"{files[i].name} corrupt" for i in sys_scan.bad]
        problems += [f"no {files[i].name}" for i in sys_scan.missing]
        searched.append(f"{system} ({', '.join(problems)})")
    else:
        searched.append(f"{system} (no such directory)")

    if not download:
        raise DataError(_not_found_message(searched, "downloading is disabled", cache))

    # Download what the cache lacks, over corrupt files, then use the whole cache.
    todo = sorted(set(scan.missing) | set(scan.bad))
    base = _mirror(mirror)
    try:
        fetched = download_fashion_mnist(
            cache, mirror=base, files=files, only=[files[i] for i in todo], progress=progress
        )
    except DataError as e:
        raise DataError(_not_found_message(searched, f"the download failed: {e}", cache)) from None
    for i in todo:
        old = scan.paths.get(i)
        if old is not None and old != cache / f"{files[i].name}.gz":
            old.unlink(missing_ok=True)  # a corrupt raw file beside the fresh .gz: remove it
    arrays = [scan.arrays[i] if i in scan.arrays else fetched[files[i].name] for i in range(len(files))]
    _check_pairs(arrays, [cache / f"{s.name}.gz" for s in files])
    return arrays, cache, f"downloaded to {cache} from {base}"


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    val_size: int = 10000,
    seed: int = 0,
    download: bool = True,
    progress: bool | ProgressCallback = True,
    *,
    cache_dir: str | os.PathLike | None = None,
    system_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    files: DatasetFiles = OFFICIAL_FILES,
) -> FashionMNIST:
    """Load Fashion-MNIST (finding or downloading it, see the module doc) and split it.

    The 60,000 training images are split into ``train`` / ``val`` by a permutation seeded
    with ``seed`` (``val_size`` images in val; 0 gives an empty val); ``test`` is the 10,000
    test images. ``cache_dir`` / ``system_dir`` / ``mirror`` / ``files`` override the cache,
    Debian and mirror locations and the expected files (for tests).
    """
    # Check val_size before any (slow) loading or download.
    if files.train_images.count is not None:
        _check_val_size(val_size, files.train_images.count)
    arrays, path, source = _resolve(
        data_dir, cache_dir=cache_dir, system_dir=system_dir, files=files,
        download=download, mirror=mirror, progress=progress,
    )
    train_images, train_labels, test_images, test_labels = arrays
    train, val = split_train_val(train_images, train_labels, val_size, seed)
    test = Split(test_images.copy(), test_labels.copy())
    return FashionMNIST(train, val, test, source, path, CLASS_NAMES, seed, int(val_size))


def _check_val_size(val_size, n: int) -> None:
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)):
        raise InvalidSplitError(f"val_size must be an integer, not {val_size!r}")
    if not 0 <= val_size < n:
        raise InvalidSplitError(
            f"val_size={val_size} is out of range: it must be between 0 and {n - 1} "
            f"(the training file holds {n} images)"
        )
