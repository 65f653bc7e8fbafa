"""Tests for aecore.data, aecore.idx and aecore.download: IDX parsing and validation, the search
order, the verified atomic download (against a local HTTP server on 127.0.0.1) and the seeded
train/val split.

Synthetic tests build their own small IDX files and pass their own expected counts and
checksums through ``files=``. The real-data tests read Fashion-MNIST from $AECORE_DATA (CI sets
it) and are skipped only when it is unset.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from aecore.data import FashionMNIST, InvalidSplitError, find_data, load_fashion_mnist, split_train_val
from aecore.download import download_fashion_mnist
from aecore.errors import DataError
from aecore.idx import CLASS_NAMES, OFFICIAL_FILES, DatasetFiles, FileSpec, decode_idx, read_idx

REAL_DATA = os.environ.get("AECORE_DATA")  # read before the autouse fixture clears it


# --------------------------------------------------------------------------------------------
# Helpers: synthetic IDX files, datasets and a local mirror
# --------------------------------------------------------------------------------------------


def idx_images(pixels: np.ndarray, *, rows: int = 28, cols: int = 28) -> bytes:
    """IDX3 bytes for uint8 images of shape (n, rows*cols)."""
    n = len(pixels)
    header = bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + rows.to_bytes(4, "big") + cols.to_bytes(4, "big")
    return header + np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """IDX1 bytes for uint8 labels of shape (n,)."""
    return bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + np.asarray(labels, np.uint8).tobytes()


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 784), dtype=np.uint8)


def random_labels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, 10, size=n, dtype=np.uint8)


def gz(data: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


class Synthetic:
    """A small dataset (n_train / n_test items) in the official file layout, with its own
    ``files`` table (counts, decompressed sha256, md5 of the .gz bytes in ``blobs``)."""

    NAMES = [spec.name for spec in OFFICIAL_FILES]

    def __init__(self, n_train: int = 30, n_test: int = 12, seed: int = 0):
        self.train_images = random_images(n_train, seed)
        self.train_labels = random_labels(n_train, seed)
        self.test_images = random_images(n_test, seed + 1)
        self.test_labels = random_labels(n_test, seed + 1)
        self.raw = dict(
            zip(
                self.NAMES,
                [
                    idx_images(self.train_images),
                    idx_labels(self.train_labels),
                    idx_images(self.test_images),
                    idx_labels(self.test_labels),
                ],
            )
        )
        self.blobs = {name: gz(data) for name, data in self.raw.items()}  # the ".gz" files
        self.files = DatasetFiles(
            *[
                FileSpec(
                    spec.name,
                    spec.kind,
                    count,
                    hashlib.sha256(self.raw[spec.name]).hexdigest(),
                    hashlib.md5(self.blobs[spec.name]).hexdigest(),
                )
                for spec, count in zip(OFFICIAL_FILES, [n_train, n_train, n_test, n_test])
            ]
        )

    def write(self, directory: Path, *, compressed: bool = True) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.NAMES:
            if compressed:
                (directory / f"{name}.gz").write_bytes(self.blobs[name])
            else:
                (directory / name).write_bytes(self.raw[name])
        return directory

    def assert_is(self, ds: FashionMNIST) -> None:
        """``ds`` holds exactly this dataset's images and labels."""
        got = np.concatenate([ds.train.images, ds.val.images])
        got_labels = np.concatenate([ds.train.labels, ds.val.labels])
        order = np.lexsort(got.T[::-1])
        want_order = np.lexsort(self.train_images.T[::-1])
        np.testing.assert_array_equal(got[order], self.train_images[want_order])
        np.testing.assert_array_equal(got_labels[order], self.train_labels[want_order])
        np.testing.assert_array_equal(ds.test.images, self.test_images)
        np.testing.assert_array_equal(ds.test.labels, self.test_labels)


class Mirror:
    """A local HTTP server on 127.0.0.1 serving ``routes``: path -> bytes (served whole), or
    ("drop", bytes) (announces the full Content-Length, sends half, closes the connection),
    or ("nolength", bytes) (no Content-Length header). Anything else is 404."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.hits: dict[str, int] = {}
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.hits[self.path] = mirror.hits.get(self.path, 0) + 1
                route = mirror.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                mode, body = route if isinstance(route, tuple) else ("ok", route)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if mode != "nolength":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)
                if mode == "nolength":
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def serve(self, synthetic: Synthetic) -> "Mirror":
        for name, blob in synthetic.blobs.items():
            self.routes[f"/{name}.gz"] = blob
        return self

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror():
    m = Mirror()
    yield m
    m.close()


@pytest.fixture
def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test sees the caller's AECORE_DATA / AECORE_MIRROR or touches the real user cache."""
    monkeypatch.delenv("AECORE_DATA", raising=False)
    monkeypatch.delenv("AECORE_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def places(tmp_path):
    """Empty (not yet created) cache and Debian directories for one test."""
    return {"cache_dir": tmp_path / "cache" / "fashion-mnist", "system_dir": tmp_path / "debian"}


def assert_one_line_naming(exc: pytest.ExceptionInfo, name: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert name in msg, msg
    return msg


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------------
# IDX parser
# --------------------------------------------------------------------------------------------


def test_class_names():
    assert CLASS_NAMES == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )


@pytest.mark.parametrize("compressed, suffix", [(True, ".gz"), (True, ""), (False, "")])
def test_read_idx_roundtrip(tmp_path, compressed, suffix):
    images, labels = random_images(7), random_labels(7)
    ib, lb = idx_images(images), idx_labels(labels)
    if compressed:
        ib, lb = gz(ib), gz(lb)  # gzip is detected by magic bytes, whatever the name
    (tmp_path / f"img{suffix}").write_bytes(ib)
    (tmp_path / f"lab{suffix}").write_bytes(lb)
    got_i = read_idx(tmp_path / f"img{suffix}", "images", count=7, sha256=hashlib.sha256(idx_images(images)).hexdigest())
    got_l = read_idx(tmp_path / f"lab{suffix}", "labels", count=7)
    assert got_i.dtype == np.uint8 and got_i.shape == (7, 784) and got_i.flags.c_contiguous
    assert got_l.dtype == np.uint8 and got_l.shape == (7,)
    np.testing.assert_array_equal(got_i, images)
    np.testing.assert_array_equal(got_l, labels)


def test_zero_items_is_valid():
    assert decode_idx(idx_images(random_images(0)), "f", "images").shape == (0, 784)
    assert decode_idx(idx_labels(np.zeros(0, np.uint8)), "f", "labels").shape == (0,)


def _bad_inputs():
    img, lab = idx_images(random_images(5)), idx_labels(random_labels(5))
    wrong_magic = b"\x12\x34" + img[2:]
    wrong_dtype = img[:2] + b"\x0d" + img[3:]  # 0x0D = float
    dims_27 = img[:8] + (27).to_bytes(4, "big") + (29).to_bytes(4, "big") + img[16:]
    dims_32 = idx_images(np.zeros((5, 1024), np.uint8), rows=32, cols=32)
    return {
        # id: (bytes, file name, kind, count, sha256, expected words in the message)
        "truncated-images": (img[:-1], "f", "images", None, None, "truncated"),
        "truncated-labels": (lab[:-3], "f", "labels", None, None, "truncated"),
        "truncated-header": (img[:10], "f", "images", None, None, "truncated"),
        "truncated-gz": (gz(img)[:-20], "f.gz", "images", None, None, "gzip"),
        "empty": (b"", "f", "labels", None, None, "truncated"),
        "trailing-bytes": (img + b"\0\0\0", "f", "images", None, None, "3 trailing bytes"),
        "trailing-bytes-labels": (lab + b"\x01", "f", "labels", None, None, "1 trailing bytes"),
        "wrong-magic": (wrong_magic, "f", "images", None, None, "magic"),
        "wrong-dtype": (wrong_dtype, "f", "images", None, None, "0x0d"),
        "wrong-dims": (dims_27, "f", "images", None, None, "27x29"),
        "wrong-dims-32": (dims_32, "f", "images", None, None, "32x32"),
        "labels-for-images": (lab, "f", "images", None, None, "labels file"),
        "images-for-labels": (img, "f", "labels", None, None, "images file"),
        "other-ndim": (b"\0\0\x08\x02" + b"\0" * 12, "f", "labels", None, None, "magic"),
        "wrong-count": (img, "f", "images", 6, None, "expected 6"),
        "checksum": (img, "f", "images", 5, "0" * 64, "sha256"),
        "checksum-gz": (gz(img), "f.gz", "images", 5, "0" * 64, "sha256"),
        "gz-not-gzip": (img, "f.gz", "images", None, None, "not gzip"),
        "corrupt-gzip": (gz(img)[:20] + bytes(30) + gz(img)[50:], "f.gz", "images", None, None, "gzip"),
        "label-out-of-range": (idx_labels(np.array([1, 2, 10], np.uint8)), "f", "labels", None, None, "10"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_idx_is_one_line_data_error_naming_the_file(tmp_path, case):
    raw, name, kind, count, sha, words = _bad_inputs()[case]
    path = tmp_path / f"bad-{case}-{name}"
    path.write_bytes(raw)
    with pytest.raises(DataError) as exc:
        read_idx(path, kind, count=count, sha256=sha)
    msg = assert_one_line_naming(exc, str(path))
    assert words in msg, msg


def test_checksum_is_of_decompressed_content(tmp_path):
    """A re-packed .gz (other gzip header, as Debian ships) has another md5 but passes."""
    raw = idx_labels(random_labels(9))
    a, b = gz(raw, mtime=0), gzip.compress(raw, compresslevel=1, mtime=123456)
    assert a != b
    sha = hashlib.sha256(raw).hexdigest()
    for i, blob in enumerate([a, b, raw]):
        (tmp_path / f"l{i}.gz" if i < 2 else tmp_path / "l").write_bytes(blob)
    for p in [tmp_path / "l0.gz", tmp_path / "l1.gz", tmp_path / "l"]:
        assert read_idx(p, "labels", count=9, sha256=sha).shape == (9,)


def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError) as exc:
        read_idx(tmp_path / "nope.gz", "images")
    assert_one_line_naming(exc, "nope.gz")


# --------------------------------------------------------------------------------------------
# Where the data is found
# --------------------------------------------------------------------------------------------


def test_search_order_explicit_env_cache_debian(tmp_path, places, monkeypatch, mirror):
    sets = {where: Synthetic(seed=s) for s, where in enumerate(["explicit", "env", "cache", "debian"])}
    # All four share one files table (same counts); checksums are left out so each passes.
    files = DatasetFiles(*[FileSpec(s.name, s.kind, s.count, None) for s in sets["explicit"].files])
    explicit = sets["explicit"].write(tmp_path / "explicit")
    env = sets["env"].write(tmp_path / "env", compressed=False)  # raw files are fine too
    sets["cache"].write(places["cache_dir"])
    sets["debian"].write(places["system_dir"])
    monkeypatch.setenv("AECORE_DATA", str(env))
    kw = dict(files=files, download=False, **places)

    def check(expected_where, expected_dir):
        assert find_data(explicit if expected_where == "explicit" else None, **{k: v for k, v in kw.items() if k != "download"}) == expected_dir
        ds = load_fashion_mnist(explicit if expected_where == "explicit" else None, val_size=5, **kw)
        sets[expected_where].assert_is(ds)
        assert ds.path == expected_dir and ds.source == str(expected_dir)

    check("explicit", explicit)
    check("env", env)
    monkeypatch.delenv("AECORE_DATA")
    check("cache", places["cache_dir"])
    for p in places["cache_dir"].iterdir():
        p.unlink()
    check("debian", places["system_dir"])
    for p in places["system_dir"].iterdir():
        p.unlink()
    assert find_data(**places, files=files) is None
    assert mirror.hits == {}  # nothing was ever downloaded


@pytest.mark.parametrize("how", ["argument", "env"])
def test_explicit_dir_without_files_is_an_error_not_a_fallback(tmp_path, places, monkeypatch, how):
    syn = Synthetic()
    syn.write(places["cache_dir"])  # a valid cache that must NOT be used instead
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / f"{syn.NAMES[0]}.gz").write_bytes(syn.blobs[syn.NAMES[0]])  # one of four
    arg = empty if how == "argument" else None
    if how == "env":
        monkeypatch.setenv("AECORE_DATA", str(empty))
    for call in (find_data, load_fashion_mnist):
        with pytest.raises(DataError) as exc:
            if call is find_data:
                call(arg, **places, files=syn.files)
            else:
                call(arg, val_size=5, **places, files=syn.files)
        msg = assert_one_line_naming(exc, str(empty))
        assert "--data-dir" in msg if how == "argument" else "AECORE_DATA" in msg
        assert syn.NAMES[1] in msg  # says what is missing


def test_explicit_dir_that_does_not_exist(tmp_path, places):
    with pytest.raises(DataError) as exc:
        load_fashion_mnist(tmp_path / "nowhere", **places, files=Synthetic().files, val_size=5)
    assert_one_line_naming(exc, str(tmp_path / "nowhere"))


def test_explicit_dir_with_a_bad_file_names_it(tmp_path, places):
    syn = Synthetic()
    d = syn.write(tmp_path / "d")
    bad = d / f"{syn.NAMES[3]}.gz"
    bad.write_bytes(gz(syn.raw[syn.NAMES[3]] + b"\0"))
    syn.write(places["cache_dir"])
    with pytest.raises(DataError) as exc:
        load_fashion_mnist(d, **places, files=syn.files, val_size=5)
    assert_one_line_naming(exc, str(bad))


def test_images_and_labels_counts_must_agree(tmp_path):
    syn = Synthetic(n_train=10)
    d = syn.write(tmp_path / "d")
    (d / f"{syn.NAMES[1]}.gz").write_bytes(gz(idx_labels(random_labels(9))))
    files = DatasetFiles(*[FileSpec(s.name, s.kind, None, None) for s in syn.files])
    with pytest.raises(DataError) as exc:
        load_fashion_mnist(d, val_size=2, files=files)
    msg = assert_one_line_naming(exc, syn.NAMES[0])
    assert "10 images" in msg and "9 labels" in msg


def test_corrupt_cache_is_never_used_when_debian_dir_is_valid(places, mirror, capsys):
    cache_set, debian_set = Synthetic(seed=1), Synthetic(seed=2)
    files = DatasetFiles(*[FileSpec(s.name, s.kind, s.count, None) for s in cache_set.files])
    cache_set.write(places["cache_dir"])
    (places["cache_dir"] / f"{cache_set.NAMES[0]}.gz").write_bytes(gz(cache_set.raw[cache_set.NAMES[0]][:-5]))
    debian_set.write(places["system_dir"])
    assert find_data(**places, files=files) == places["system_dir"]
    ds = load_fashion_mnist(**places, files=files, mirror=mirror.url, val_size=5)
    debian_set.assert_is(ds)
    assert "corrupt" in capsys.readouterr().err
    assert mirror.hits == {}


# --------------------------------------------------------------------------------------------
# Downloading (local mirror)
# --------------------------------------------------------------------------------------------


def test_download_success_writes_cache_atomically_and_is_reused(places, mirror):
    syn = Synthetic()
    mirror.serve(syn)
    seen = []
    ds = load_fashion_mnist(
        **places, files=syn.files, mirror=mirror.url, val_size=10, progress=lambda *a: seen.append(a)
    )
    syn.assert_is(ds)
    cache = places["cache_dir"]
    assert ds.source == f"downloaded to {cache} from {mirror.url}" and ds.path == cache
    assert leftovers(cache) == sorted(f"{n}.gz" for n in syn.NAMES)  # no temp files
    for name in syn.NAMES:
        assert (cache / f"{name}.gz").read_bytes() == syn.blobs[name]
    # progress: every file reported, with the total from Content-Length, ending complete
    for name in syn.NAMES:
        calls = [(done, total) for n, done, total in seen if n == f"{name}.gz"]
        assert calls[0] == (0, len(syn.blobs[name])) and calls[-1] == (len(syn.blobs[name]),) * 2
    assert sum(mirror.hits.values()) == 4
    # second load: from the cache, no request
    ds2 = load_fashion_mnist(**places, files=syn.files, mirror=mirror.url, val_size=10)
    assert ds2.source == str(cache) and sum(mirror.hits.values()) == 4
    assert find_data(**places, files=syn.files) == cache


def test_download_uses_aecore_mirror_env_and_click_progress(places, mirror, monkeypatch, capsys):
    syn = Synthetic()
    mirror.serve(syn)
    monkeypatch.setenv("AECORE_MIRROR", mirror.url + "/")
    ds = load_fashion_mnist(**places, files=syn.files, val_size=3)  # progress=True: click bar
    syn.assert_is(ds)
    assert "Downloading" in capsys.readouterr().err
    assert sum(mirror.hits.values()) == 4


def test_download_only_fetches_what_the_cache_lacks(places, mirror):
    syn = Synthetic()
    mirror.serve(syn)
    cache = places["cache_dir"]
    cache.mkdir(parents=True)
    (cache / syn.NAMES[0]).write_bytes(syn.raw[syn.NAMES[0]])  # raw, valid
    (cache / f"{syn.NAMES[2]}.gz").write_bytes(syn.blobs[syn.NAMES[2]])
    ds = load_fashion_mnist(**places, files=syn.files, mirror=mirror.url, progress=False, val_size=4)
    syn.assert_is(ds)
    assert mirror.hits == {f"/{syn.NAMES[1]}.gz": 1, f"/{syn.NAMES[3]}.gz": 1}


@pytest.mark.parametrize("kind", ["truncated-gz", "bad-content", "trailing", "not-gzip"])
def test_corrupt_cached_file_is_redownloaded_over(places, mirror, capsys, kind):
    syn = Synthetic()
    mirror.serve(syn)
    cache = syn.write(places["cache_dir"])
    name = syn.NAMES[2]
    raw = bytearray(syn.raw[name])
    raw[100] ^= 0xFF
    (cache / f"{name}.gz").write_bytes(
        {
            "truncated-gz": syn.blobs[name][:-10],
            "bad-content": gz(bytes(raw)),
            "trailing": gz(syn.raw[name] + b"x"),
            "not-gzip": syn.raw[name],
        }[kind]
    )
    ds = load_fashion_mnist(**places, files=syn.files, mirror=mirror.url, progress=False, val_size=4)
    syn.assert_is(ds)
    assert mirror.hits == {f"/{name}.gz": 1}
    assert (cache / f"{name}.gz").read_bytes() == syn.blobs[name]
    assert leftovers(cache) == sorted(f"{n}.gz" for n in syn.NAMES)
    err = capsys.readouterr().err
    assert "corrupt" in err and name in err


def test_corrupt_raw_file_in_cache_is_replaced_by_the_download(places, mirror):
    syn = Synthetic()
    mirror.serve(syn)
    cache = syn.write(places["cache_dir"])
    name = syn.NAMES[1]
    (cache / f"{name}.gz").unlink()
    (cache / name).write_bytes(syn.raw[name][:-1])  # truncated raw file
    ds = load_fashion_mnist(**places, files=syn.files, mirror=mirror.url, progress=False, val_size=4)
    syn.assert_is(ds)
    assert leftovers(cache) == sorted(f"{n}.gz" for n in syn.NAMES)


def _serve_bad(mirror: Mirror, syn: Synthetic, name: str, how: str) -> None:
    raw = bytearray(syn.raw[name])
    raw[-1] ^= 0x01
    mirror.routes[f"/{name}.gz"] = {
        "corrupt": gz(bytes(raw)),  # valid gzip + IDX, wrong sha256
        "truncated": syn.blobs[name][: len(syn.blobs[name]) // 2],  # short body, honest length
        "drop": ("drop", syn.blobs[name]),  # connection dropped mid-way
        "not-gzip": syn.raw[name],
        "html": b"<html>error</html>",
        "missing": None,  # 404
    }[how]
    if mirror.routes[f"/{name}.gz"] is None:
        del mirror.routes[f"/{name}.gz"]


@pytest.mark.parametrize("how", ["corrupt", "truncated", "drop", "not-gzip", "html", "missing"])
def test_failed_download_leaves_nothing_in_the_cache(places, mirror, how):
    syn = Synthetic(n_train=300)  # > one 64 KiB read, so a drop happens mid-stream
    mirror.serve(syn)
    name = syn.NAMES[0]  # the first file fetched
    _serve_bad(mirror, syn, name, how)
    with pytest.raises(DataError) as exc:
        load_fashion_mnist(**places, files=syn.files, mirror=mirror.url, progress=False, val_size=5)
    msg = assert_one_line_naming(exc, f"{mirror.url}/{name}.gz")
    assert "--data-dir" in msg and "AECORE_DATA" in msg
    assert {"drop": "incomplete", "missing": "404", "corrupt": "sha256", "not-gzip": "not gzip"}.get(how, "") in msg
    assert leftovers(places["cache_dir"]) == []
    assert mirror.hits[f"/{name}.gz"] == 1


@pytest.mark.parametrize("how", ["corrupt", "drop"])
def test_failed_later_download_keeps_only_complete_verified_files(places, mirror, how):
    syn = Synthetic(n_train=300)
    mirror.serve(syn)
    _serve_bad(mirror, syn, syn.NAMES[2], how)
    with pytest.raises(DataError):
        download_fashion_mnist(places["cache_dir"], mirror=mirror.url, files=syn.files, progress=False)
    cache = places["cache_dir"]
    assert leftovers(cache) == sorted(f"{n}.gz" for n in syn.NAMES[:2])
    for name in syn.NAMES[:2]:
        assert (cache / f"{name}.gz").read_bytes() == syn.blobs[name]


def test_download_without_content_length(places, mirror):
    syn = Synthetic()
    for name, blob in syn.blobs.items():
        mirror.routes[f"/{name}.gz"] = ("nolength", blob)
    seen = []
    out = download_fashion_mnist(places["cache_dir"], mirror=mirror.url, files=syn.files, progress=lambda *a: seen.append(a))
    np.testing.assert_array_equal(out[syn.NAMES[0]], syn.train_images)
    assert all(total is None for _, _, total in seen)


def test_keyboard_interrupt_mid_download_removes_the_temp_file(places, mirror):
    syn = Synthetic(n_train=300)
    mirror.serve(syn)
    cache = places["cache_dir"]
    seen_part = []

    def interrupt(name, done, total):
        if done > 0:
            seen_part.extend(p for p in leftovers(cache) if p.endswith(".part"))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_fashion_mnist(**places, files=syn.files, mirror=mirror.url, progress=interrupt, val_size=5)
    assert seen_part  # the download really was writing a temp file in the cache dir
    assert leftovers(cache) == []


def test_md5_of_the_gz_is_checked_when_asked(places, mirror):
    syn = Synthetic()
    mirror.serve(syn)
    name = syn.NAMES[1]
    repacked = gzip.compress(syn.raw[name], compresslevel=1, mtime=99)  # same content, other .gz
    mirror.routes[f"/{name}.gz"] = repacked
    # Default (not the official mirror): only the decompressed sha256 counts -> accepted.
    download_fashion_mnist(places["cache_dir"], mirror=mirror.url, files=syn.files, only=[syn.files[1]], progress=False)
    assert (places["cache_dir"] / f"{name}.gz").read_bytes() == repacked
    # check_md5=True (as for the official mirror): the md5 of the .gz must match.
    other = places["cache_dir"].parent / "other"
    with pytest.raises(DataError) as exc:
        download_fashion_mnist(other, mirror=mirror.url, files=syn.files, only=[syn.files[1]], progress=False, check_md5=True)
    assert "md5" in assert_one_line_naming(exc, f"{name}.gz")
    assert leftovers(other) == []
    mirror.routes[f"/{name}.gz"] = syn.blobs[name]
    download_fashion_mnist(other, mirror=mirror.url, files=syn.files, only=[syn.files[1]], progress=False, check_md5=True)
    assert leftovers(other) == [f"{name}.gz"]


def test_official_table_checks_md5_for_the_official_mirror_only():
    from aecore import download

    assert download.OFFICIAL_MIRROR == "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
    assert [s.md5 for s in OFFICIAL_FILES] == [
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ]
    assert [s.count for s in OFFICIAL_FILES] == [60000, 60000, 10000, 10000]


# --------------------------------------------------------------------------------------------
# Not found / offline
# --------------------------------------------------------------------------------------------


def _assert_lists_options(msg: str, places: dict) -> None:
    assert "\n" not in msg
    for option in ("--data-dir", "AECORE_DATA", "apt install dataset-fashion-mnist", "download"):
        assert option in msg, msg
    assert str(places["cache_dir"]) in msg and str(places["system_dir"]) in msg  # places searched


def test_offline_is_one_clear_error(places, closed_port_url):
    with pytest.raises(DataError) as exc:
        load_fashion_mnist(**places, files=Synthetic().files, mirror=closed_port_url, val_size=5)
    _assert_lists_options(str(exc.value), places)
    assert closed_port_url in str(exc.value)
    assert leftovers(places["cache_dir"]) == []


def test_not_found_without_download(places, mirror):
    syn = Synthetic()
    mirror.serve(syn)
    with pytest.raises(DataError) as exc:
        load_fashion_mnist(**places, files=syn.files, mirror=mirror.url, download=False, val_size=5)
    _assert_lists_options(str(exc.value), places)
    assert "disabled" in str(exc.value)
    assert mirror.hits == {}
    assert find_data(**places, files=syn.files) is None


# --------------------------------------------------------------------------------------------
# Train / val split
# --------------------------------------------------------------------------------------------


def _indexed(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first two pixels encode their row index."""
    images = np.zeros((n, 784), np.uint8)
    images[:, 0], images[:, 1] = np.arange(n) // 256, np.arange(n) % 256
    return images, (np.arange(n) % 10).astype(np.uint8)


def _rows(split) -> np.ndarray:
    return split.images[:, 0].astype(int) * 256 + split.images[:, 1]


def test_split_is_a_seeded_partition():
    images, labels = _indexed(1000)
    train, val = split_train_val(images, labels, 200, seed=0)
    assert len(train) == 800 and len(val) == 200
    ti, vi = _rows(train), _rows(val)
    assert sorted(np.concatenate([ti, vi]).tolist()) == list(range(1000))
    np.testing.assert_array_equal(train.labels, labels[ti])  # labels stay with their images
    np.testing.assert_array_equal(val.labels, labels[vi])
    for s in (train, val):
        assert s.images.flags.c_contiguous and s.images.dtype == np.uint8 and s.labels.dtype == np.uint8
        assert s.images.flags.writeable
    train2, val2 = split_train_val(images, labels, 200, seed=0)
    np.testing.assert_array_equal(_rows(val2), vi)
    _, val3 = split_train_val(images, labels, 200, seed=1)
    assert set(_rows(val3)) != set(vi)
    assert not np.array_equal(vi, np.arange(200))  # really shuffled, not the first rows


def test_val_size_zero_gives_empty_val(tmp_path):
    syn = Synthetic(n_train=20)
    ds = load_fashion_mnist(syn.write(tmp_path / "d"), val_size=0, files=syn.files)
    assert len(ds.train) == 20 and ds.val.images.shape == (0, 784) and ds.val.labels.shape == (0,)
    np.testing.assert_array_equal(ds.train.images, syn.train_images)
    assert ds.class_names == CLASS_NAMES


@pytest.mark.parametrize("val_size", [20, 21, 60000, -1, 2.5, True])
def test_bad_val_size_is_one_line_error(tmp_path, val_size):
    syn = Synthetic(n_train=20)
    d = syn.write(tmp_path / "d")
    with pytest.raises(InvalidSplitError) as exc:
        load_fashion_mnist(d, val_size=val_size, files=syn.files)
    assert isinstance(exc.value, DataError) and isinstance(exc.value, ValueError)
    assert "val_size" in str(exc.value) and "\n" not in str(exc.value)


def test_val_size_checked_before_loading_the_official_files(places):
    with pytest.raises(InvalidSplitError, match="59999"):
        load_fashion_mnist(**places, val_size=60000, download=False)


# --------------------------------------------------------------------------------------------
# The real Fashion-MNIST (from $AECORE_DATA, which CI sets)
# --------------------------------------------------------------------------------------------

needs_real = pytest.mark.skipif(not REAL_DATA, reason="AECORE_DATA is unset (CI sets it to the real Fashion-MNIST)")


@pytest.fixture(scope="module")
def real():
    if not REAL_DATA:
        pytest.skip("AECORE_DATA is unset")
    return load_fashion_mnist(REAL_DATA, progress=False)


@needs_real
def test_real_data_shapes_and_balance(real):  # its speed: bench/test_bench_data.py
    ds = real
    assert ds.path == Path(REAL_DATA) and ds.source == REAL_DATA
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50000, 10000, 10000)
    for s in (ds.train, ds.val, ds.test):
        assert s.images.dtype == np.uint8 and s.labels.dtype == np.uint8
        assert s.images.shape == (len(s), 784) and s.images.flags.c_contiguous
    all_labels = np.concatenate([ds.train.labels, ds.val.labels])
    assert np.bincount(all_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(ds.test.labels, minlength=10).tolist() == [1000] * 10
    assert ds.class_names == CLASS_NAMES
    assert 0 < ds.train.images.max() <= 255 and ds.train.images.mean() > 50  # real pictures


@needs_real
def test_real_data_found_through_env_and_split_is_seeded(real, monkeypatch, places):
    ds = real
    monkeypatch.setenv("AECORE_DATA", REAL_DATA)
    assert find_data(**places) == Path(REAL_DATA)
    raw_dir = Path(REAL_DATA)
    spec_i, spec_l = OFFICIAL_FILES.train_images, OFFICIAL_FILES.train_labels
    images = read_idx(next(raw_dir.glob(spec_i.name + "*")), "images", count=60000, sha256=spec_i.sha256)
    labels = read_idx(next(raw_dir.glob(spec_l.name + "*")), "labels", count=60000, sha256=spec_l.sha256)
    train, val = split_train_val(images, labels, 10000, seed=0)
    np.testing.assert_array_equal(val.images, ds.val.images)  # same seed, same split
    np.testing.assert_array_equal(train.labels, ds.train.labels)
    _, val1 = split_train_val(images, labels, 10000, seed=1)
    assert not np.array_equal(val1.labels, ds.val.labels)
