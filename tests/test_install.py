"""The quick start in any order: numba's disk cache never lands inside the installed package
(kernels/jit_cache.py), checked on the locator and by the README's two install commands run
in that order in a fresh virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aecore import __version__
from aecore.kernels import cpu, jit_cache

REPO = Path(__file__).resolve().parents[1]


def _locator(py_func, py_file):
    from numba.core import caching

    ours = [c for c in caching.CacheImpl._locator_classes if getattr(c, "_aecore", False)]
    assert ours, "jit_cache.install() did not put its locator first"
    return ours[0].from_function(py_func, py_file)


def _cached_function():
    for name in dir(cpu):
        f = getattr(cpu, name)
        if getattr(f, "_cache", None) is not None and hasattr(f, "py_func"):
            return f
    raise AssertionError("no cached @njit function in kernels/cpu.py")


def test_the_cache_goes_under_the_user_cache(tmp_path, monkeypatch):
    from numba.core import config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "CACHE_DIR", "")
    f = _cached_function()
    loc = _locator(f.py_func, cpu.__file__)
    path = Path(loc.get_cache_path())
    assert path.is_relative_to(tmp_path / "cache" / "aecore" / "numba"), path
    assert not path.is_relative_to(Path(cpu.__file__).parent)
    assert loc.get_source_stamp()[1] == jit_cache.digest()  # keyed by every compiled source


def test_numba_cache_dir_from_the_user_wins(tmp_path, monkeypatch):
    from numba.core import config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "mine"))
    f = _cached_function()
    path = Path(_locator(f.py_func, cpu.__file__).get_cache_path())
    assert path.is_relative_to(tmp_path / "mine"), path


@pytest.mark.slow
def test_readme_install_commands_in_order(tmp_path, real_data_dir):
    """`pip install . && aecore train ...`, then `pip install -e ".[test]"`, then
    `aecore --version`, in a fresh venv. Dependencies come from this environment (a .pth line;
    --no-deps, --no-build-isolation), so nothing is downloaded; the sources are copied so that
    the build writes nothing into the repository."""
    src = tmp_path / "src"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    files = listed.stdout.split()
    for f in files:
        if (REPO / f).is_file() and not f.startswith("docs/"):
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # this environment's packages (pip, setuptools, numba...) after the venv's own; the lines
    # add the directories only: their .pth files (this aecore's editable finder) are not run
    dirs = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (site / "deps.pth").write_text("".join(f"{d}\n" for d in dirs))
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), NUMBA_ENABLE_CUDASIM="1")
    pip = [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]

    def run(*cmd):
        r = subprocess.run([str(c) for c in cmd], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}:\n{r.stdout}\n{r.stderr}"
        return r

    run(*pip, src)
    run(venv / "bin" / "aecore", "train", "--device", "cpu", "--hidden", "16", "--epochs", "1",
        "--limit", "256", "--data-dir", real_data_dir, "--out", tmp_path / "runs")
    installed = site / "aecore"
    assert installed.is_dir()
    cached_inside = list(installed.rglob("*.nb[ic]"))
    run(*pip, "-e", f"{src}[test]")
    r = run(venv / "bin" / "aecore", "--version")
    assert __version__ in r.stdout
    assert not cached_inside  # numba's cache went to the user cache instead:
    assert list((tmp_path / "cache" / "aecore" / "numba").rglob("*.nbi"))
