"""The kernels' cache (simulator.jit): every kernel declared through it, keyed by all kernel sources together."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import jit


def _package_files():
    for package in jit.PACKAGES:
        yield from sorted((jit.ROOT / package).rglob("*.py"))


def test_every_kernel_is_declared_through_the_cache_and_every_kernel_file_is_in_the_stamp():
    kernel_files = set(jit.kernel_files())
    assert kernel_files, "no kernel source found"
    for path in _package_files():
        if path == jit.ROOT / "simulator" / "jit.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"numba\.(njit|jit)\(", text), f"{path}: declare kernels with simulator.jit.kernel"
        assert ("@kernel" in text) == (path in kernel_files), path
    assert jit.ROOT / "simulator" / "nest.py" in kernel_files  # the cost kernel, which mappers/bound.py inlines


def test_the_stamp_changes_with_any_kernel_source(tmp_path, monkeypatch):
    files = []
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("@kernel\ndef f(): pass\n")
        files.append(tmp_path / name)
    monkeypatch.setattr(jit, "ROOT", tmp_path)
    monkeypatch.setattr(jit, "kernel_files", lambda: tuple(files))

    def stamp():
        jit.source_stamp.cache_clear()
        return jit.source_stamp()

    first = stamp()
    assert stamp() == first
    files[1].write_text("@kernel\ndef f(): return 1\n")  # only the inlined file changes: every kernel recompiles
    assert stamp() != first
    jit.source_stamp.cache_clear()


def test_old_versions_are_removed_beyond_the_kept_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSCOPE_CACHE_DIR", str(tmp_path))
    root = tmp_path / "kernels"
    for i in range(jit.KEPT_VERSIONS + 2):
        (root / f"old{i}").mkdir(parents=True)
        os.utime(root / f"old{i}", (1000 + i, 1000 + i))
    jit.version_folder.cache_clear()
    try:
        folder = jit.version_folder()
    finally:
        jit.version_folder.cache_clear()
    kept = {p.name for p in root.iterdir()}  # this version and the most recently used others
    assert kept == {folder.name} | {f"old{i}" for i in range(3, jit.KEPT_VERSIONS + 2)}


def test_a_version_used_within_the_hour_is_not_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSCOPE_CACHE_DIR", str(tmp_path))
    root = tmp_path / "kernels"
    for i in range(jit.KEPT_VERSIONS + 2):
        (root / f"old{i}").mkdir(parents=True)  # all used just now: another process may be saving there
    jit.version_folder.cache_clear()
    try:
        folder = jit.version_folder()
    finally:
        jit.version_folder.cache_clear()
    assert {p.name for p in root.iterdir()} == {folder.name} | {f"old{i}" for i in range(jit.KEPT_VERSIONS + 2)}


def _run(code: str, env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         cwd=jit.ROOT, timeout=600, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("numba_cache_dir", [False, True])
def test_kernels_are_cached_in_the_version_folder_unless_numba_cache_dir_is_set(tmp_path, numba_cache_dir):
    """A process compiles into the version folder and the next one, another checkout's included, loads from it;
    with NUMBA_CACHE_DIR Numba's own locator is used."""
    env = {"ATTNSCOPE_CACHE_DIR": str(tmp_path / "mine")}
    if numba_cache_dir:
        env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba")
    else:
        os.environ.pop("NUMBA_CACHE_DIR", None)
    code = ("from mappers.space import _set_assignment as k\nfrom simulator import jit\n"
            "print(type(k._cache._impl.locator).__name__, k._cache.cache_path, jit.version_folder())")  # fmt: skip
    locator, path, folder = _run(code, env).split()
    if numba_cache_dir:
        assert locator == "UserProvidedCacheLocator" and path.startswith(str(tmp_path / "numba"))
    else:
        assert locator == "SourceTreeLocator"
        assert Path(path) == Path(folder) / "mappers" and Path(folder).parent == tmp_path / "mine" / "kernels"
