"""Fashion-MNIST: find it, download it if it is missing, load and split it.

``load_fashion_mnist(data_dir=None, val_size=10000, seed=0, download=True, progress=True)``
returns a :class:`FashionMNIST` (``train`` / ``val`` / ``test`` splits of uint8 images (n, 784)
and labels (n,), ``source``, ``class_names``); ``find_data(data_dir)`` the directory it would
load, or None (never downloads); ``download_fashion_mnist(dest_dir, mirror)`` the verified files
(:mod:`aecore.download`). Parsing and validating one IDX file is :mod:`aecore.idx`.

Where the data is looked for, in order:

1. ``data_dir`` (the CLI's ``--data-dir``), else ``$AECORE_DATA``. A directory given this way
   is used as is: missing or bad files there are an error naming it, never a silent fallback.
2. The user cache, ``platformdirs.user_cache_dir("aecore")/fashion-mnist``.
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package).
4. Otherwise the four files are downloaded from the official mirror (``$AECORE_MIRROR``
   overrides it) into the cache, verified, and written atomically (temp file + os.replace).

In every directory a file may be ``name.gz`` or the decompressed ``name``. A corrupt file in
the cache is reported and downloaded again over; it is never used. Every problem is a
:class:`aecore.errors.DataError` whose message is one line naming the file.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import DataError
from .download import OFFICIAL_MIRROR, ProgressCallback, download_fashion_mnist, mirror_url
from .idx import CLASS_NAMES, OFFICIAL_FILES, DatasetFiles, FileSpec, decode_idx, read_idx

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

SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
ENV_DATA = "AECORE_DATA"


class InvalidSplitError(DataError, ValueError):
    """``val_size`` cannot be used (negative, or leaves no training images)."""


# --- finding the files ----------------------------------------------------------------------


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


# --- the dataset ----------------------------------------------------------------------------


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


def _what_is_wrong(directory: Path, scan: _Scan, files: DatasetFiles) -> str:
    """``DIR (f1 corrupt, no f2)``: a searched directory as the not-found message lists it."""
    problems = [f"{files[i].name} corrupt" for i in scan.bad]
    problems += [f"no {files[i].name}" for i in scan.missing]
    return f"{directory} ({', '.join(problems)})"


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
        searched.append(_what_is_wrong(cache, scan, files))
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
        searched.append(_what_is_wrong(system, sys_scan, files))
    else:
        searched.append(f"{system} (no such directory)")

    if not download:
        raise DataError(_not_found_message(searched, "downloading is disabled", cache))

    # Download what the cache lacks, over corrupt files, then use the whole cache.
    todo = sorted(set(scan.missing) | set(scan.bad))
    base = mirror_url(mirror)
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
