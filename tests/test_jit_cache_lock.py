"""numba's cache index under concurrent saves (kernels/jit_cache.py, ``_lock_index_files``):
processes adding different keys to one function's index at once each keep their own key,
and every key loads its own data."""

from __future__ import annotations

import multiprocessing

from aecore.kernels import jit_cache

KEYS = 60  # per process


def _save_many(path, who, stamp):
    from numba.core import caching

    for i in range(KEYS):
        f = caching.IndexDataCacheFile(str(path), "f-1.py311", stamp)
        f.save((who, i), f"{who}:{i}")


def test_concurrent_saves_keep_every_key_with_its_own_data(tmp_path):
    from numba.core import caching

    assert jit_cache.INSTALLED and caching.IndexDataCacheFile._aecore_locked
    stamp = ((1.0, 2), jit_cache.digest())  # aecore's: (numba's stamp, the package digest)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_many, args=(tmp_path, who, stamp)) for who in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    f = caching.IndexDataCacheFile(str(tmp_path), "f-1.py311", stamp)
    index = f._load_index()
    assert sorted(index) == sorted((who, i) for who in "ab" for i in range(KEYS))
    for key in index:
        assert f.load(key) == f"{key[0]}:{key[1]}", key
