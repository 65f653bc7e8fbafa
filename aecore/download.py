"""Downloading the Fashion-MNIST files from a mirror, verified and written atomically.

``download_fashion_mnist(dest_dir, mirror=None, ...)`` fetches ``<mirror>/<name>.gz`` for each
file, checks it (md5 of the .gz for the official mirror, then :func:`aecore.idx.decode_idx`'s
checks, sha256 included) and only then moves it into place, so a failed or interrupted download
leaves nothing half-written. Every failure is a :class:`aecore.errors.DataError` naming the URL.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import DataError
from .idx import OFFICIAL_FILES, DatasetFiles, FileSpec, decode_idx, one_line

OFFICIAL_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
ENV_MIRROR = "AECORE_MIRROR"

# progress callback: (file name, bytes received so far, total bytes or None if unknown)
ProgressCallback = Callable[[str, int, "int | None"], None]


def mirror_url(mirror: str | None) -> str:
    """The base URL to download from: ``mirror``, else ``$AECORE_MIRROR``, else the official one."""
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
                raise DataError(f"{url}: download failed ({one_line(reason)})") from None
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
    base = mirror_url(mirror)
    if check_md5 is None:
        check_md5 = base == OFFICIAL_MIRROR
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest_dir}: cannot create the download directory ({one_line(e)})") from None
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
