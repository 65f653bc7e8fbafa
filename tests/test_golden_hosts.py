"""tests/golden_hosts.py, the per-host golden fixtures: which file a run is held to, exactly or
to a tolerance, on fixtures written to tmp_path."""

from __future__ import annotations

import numpy as np
import pytest

import golden_hosts


def _fixture(tmp_path, host, arrays):
    path = golden_hosts.path_for(tmp_path / "golden_x.npz", host)
    np.savez_compressed(path, **arrays)
    return tmp_path / "golden_x.npz"


WANT = {"a/w": np.linspace(-1, 1, 12, dtype=np.float32), "a/step": np.array(3)}


def test_the_host_key_names_the_cpu_and_the_blas_kernel():
    key = golden_hosts.host_key()
    assert key == key.lower() and "-" in key and " " not in key


def test_this_hosts_file_is_held_bit_for_bit(tmp_path):
    base = _fixture(tmp_path, golden_hosts.host_key(), WANT)
    _fixture(tmp_path, "otherhost-kernel", {k: v + 1 for k, v in WANT.items()})  # not read
    golden_hosts.check(dict(WANT), base, "a/", "t.py")
    nudged = {**WANT, "a/w": np.nextafter(WANT["a/w"], np.float32(2))}
    with pytest.raises(AssertionError, match="a/w"):
        golden_hosts.check(nudged, base, "a/", "t.py")


def test_without_this_hosts_file_every_other_host_is_held_to_a_tolerance(tmp_path):
    base = _fixture(tmp_path, "otherhost-kernel", WANT)
    _fixture(tmp_path, "thirdhost-kernel", WANT)
    close = {**WANT, "a/w": WANT["a/w"] * np.float32(1 + 1e-5)}
    golden_hosts.check(close, base, "a/", "t.py")
    far = {**WANT, "a/w": WANT["a/w"] * np.float32(1.01)}
    with pytest.raises(AssertionError, match="run tests/t.py as a script"):
        golden_hosts.check(far, base, "a/", "t.py")
    with pytest.raises(AssertionError):
        golden_hosts.check({"a/w": WANT["a/w"]}, base, "a/", "t.py")  # a key missing


def test_no_fixture_at_all_fails(tmp_path):
    with pytest.raises(AssertionError, match="no fixture"):
        golden_hosts.check(dict(WANT), tmp_path / "golden_x.npz", "a/", "t.py")
