"""Hypothesis fuzz of the IDX parser: whatever the bytes, ``decode_idx`` returns a valid array
or raises DataError (one line, naming the file), never any other exception."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aecore.errors import DataError
from aecore.idx import decode_idx

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

N = 3
IMAGES = bytes([0, 0, 8, 3]) + N.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(range(256)) * 9 + bytes(N * 784 - 2304)
LABELS = bytes([0, 0, 8, 1]) + N.to_bytes(4, "big") + bytes([0, 9, 4])
VALID = {"images": IMAGES, "labels": LABELS}

kinds = st.sampled_from(["images", "labels"])
names = st.sampled_from(["file", "file.gz"])
counts = st.sampled_from([None, N, 0])


def check(raw: bytes, name: str, kind: str, count=None, sha256=None) -> None:
    try:
        arr = decode_idx(raw, name, kind, count=count, sha256=sha256)
    except DataError as e:
        msg = str(e)
        assert msg.startswith(name + ": ") and "\n" not in msg, msg
        return
    # Accepted: it must really be a well-formed array of the requested kind.
    assert arr.dtype == np.uint8
    if kind == "images":
        assert arr.ndim == 2 and arr.shape[1] == 784
    else:
        assert arr.ndim == 1 and (len(arr) == 0 or int(arr.max()) <= 9)
    if count is not None:
        assert len(arr) == count


@FUZZ
@given(raw=st.binary(max_size=4000), name=names, kind=kinds, count=counts)
def test_arbitrary_bytes(raw, name, kind, count):
    check(raw, name, kind, count)


@FUZZ
@given(body=st.binary(max_size=2000), name=names, kind=kinds)
def test_arbitrary_bytes_behind_a_gzip_or_idx_header(body, name, kind):
    check(b"\x1f\x8b\x08\x00" + body, name, kind)  # gzip magic: exercises the decompressor
    check(bytes([0, 0, 8, 3 if kind == "images" else 1]) + body, name, kind)  # IDX magic


@st.composite
def mutated(draw):
    kind = draw(kinds)
    data = bytearray(VALID[kind])
    compressed = draw(st.booleans())
    if compressed:
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "append", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=20))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    name = "file.gz" if compressed and draw(st.booleans()) else "file"
    return bytes(data), name, kind


@FUZZ
@given(case=mutated(), count=counts, verify=st.booleans())
def test_mutations_of_a_valid_file(case, count, verify):
    raw, name, kind = case
    sha = hashlib.sha256(VALID[kind]).hexdigest() if verify else None
    check(raw, name, kind, count, sha)
    if verify:
        # With the checksum, only the exact original content can be accepted.
        try:
            arr = decode_idx(raw, name, kind, sha256=sha)
        except DataError:
            return
        assert arr.tobytes() == VALID[kind][16 if kind == "images" else 8 :]


@FUZZ
@given(dims=st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3), extra=st.binary(max_size=64))
def test_huge_or_odd_declared_dimensions(dims, extra):
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in dims)
    check(header + extra, "file", "images")
    check(bytes([0, 0, 8, 1]) + dims[0].to_bytes(4, "big") + extra, "file", "labels")


def test_the_valid_files_are_accepted():
    assert decode_idx(IMAGES, "f", "images", count=N).shape == (N, 784)
    assert decode_idx(gzip.compress(LABELS), "f.gz", "labels", count=N).tolist() == [0, 9, 4]
