"""Numba kernels, compiled once per version of their source and kept across checkouts and installs.

Every kernel of attnscope is declared with :func:`kernel` (``numba.njit(cache=True)``). Numba's own cache sits in each
source folder's ``__pycache__`` and is keyed by that one file, so a fresh clone or install compiles every kernel again
(about 14 s of a first ``reproduce fusemax``), and a kernel that inlines another file's kernel (``mappers/bound.py``
inlines ``simulator/nest.py``'s) is not recompiled when only that other file changes. Here the kernels are cached
under the user's cache folder (``$ATTNSCOPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/attnscope`` or
``~/.cache/attnscope``), in a folder named by a hash of the contents of *every* kernel source file together: any
edit to any of them starts a fresh folder (all kernels recompile), and any checkout with the same kernel sources
reuses the compiled code. Numba's index still checks its version, the function's bytecode and the CPU. The most
recently used :data:`KEPT_VERSIONS` folders are kept (and any used within the hour). ``NUMBA_CACHE_DIR``, when set,
takes precedence (Numba's own locator), and where the cache folder cannot be written Numba falls back to
``__pycache__``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from functools import cache
from pathlib import Path

import numba
from numba.core import caching

ROOT = Path(__file__).resolve().parents[1]
"""The checkout (or install) root: the folder holding the packages below."""
PACKAGES = ("attnscope", "einsum", "mappers", "simulator", "validate", "workloads")
"""The packages searched for kernel source files."""
MARKER = "@kernel"
"""How a kernel is declared; a file holding it is a kernel source file."""
KEPT_VERSIONS = 4
"""Cache folders (versions of the kernel sources) kept; older ones are removed when a new one is made, unless used
within :data:`IN_USE_S` (a process may still be saving kernels there)."""
IN_USE_S = 3600.0


def kernel(*args, **options):
    """``numba.njit(cache=True, **options)``, cached by :class:`SourceTreeLocator`: ``@kernel`` or
    ``@kernel(parallel=True)``."""
    if len(args) == 1 and callable(args[0]) and not options:
        return numba.njit(cache=True)(args[0])
    return numba.njit(*args, cache=True, **options)


@cache
def kernel_files() -> tuple[Path, ...]:
    """Every source file of :data:`PACKAGES` that declares a kernel (:data:`MARKER`), sorted."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if MARKER in path.read_text(encoding="utf-8") and path != Path(__file__).resolve():
                    found.append(path)
    return tuple(found)


@cache
def source_stamp() -> bytes:
    """SHA-256 of the kernel source files' relative paths and contents, together."""
    digest = hashlib.sha256()
    for path in kernel_files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.digest()


def cache_root() -> Path:
    """The folder holding one cache folder per version of the kernel sources."""
    if os.environ.get("ATTNSCOPE_CACHE_DIR"):
        return Path(os.environ["ATTNSCOPE_CACHE_DIR"]) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attnscope" / "kernels"


@cache
def version_folder() -> Path:
    """This version's cache folder (created, marked used now; the least recently used beyond
    :data:`KEPT_VERSIONS` removed)."""
    root = cache_root()
    folder = root / source_stamp().hex()[:24]
    fresh = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.utime(folder)
    if fresh:
        others = sorted((p for p in root.iterdir() if p.is_dir() and p != folder), key=lambda p: p.stat().st_mtime)
        for old in others[: max(0, len(others) - (KEPT_VERSIONS - 1))]:
            if time.time() - old.stat().st_mtime > IN_USE_S:
                shutil.rmtree(old, ignore_errors=True)
    return folder


class SourceTreeLocator(caching._CacheLocator):
    """Numba cache locator for attnscope's kernels (module docstring); None (the next locator) for any other
    function, or where ``NUMBA_CACHE_DIR`` is set or the cache folder cannot be written."""

    def __init__(self, py_func, py_file: str):
        self._lineno = py_func.__code__.co_firstlineno
        relative = Path(py_file).resolve().relative_to(ROOT)
        self._cache_path = str(version_folder().joinpath(*relative.parent.parts))

    def get_cache_path(self) -> str:
        return self._cache_path

    def get_source_stamp(self) -> bytes:
        return source_stamp()

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file: str):
        if numba.config.CACHE_DIR or Path(py_file).resolve() not in kernel_files():
            return None
        try:
            self = cls(py_func, py_file)
            self.ensure_cache_path()
        except (OSError, RuntimeError):  # RuntimeError: no home folder to find the cache in
            return None
        return self


def _register() -> None:
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # renamed in Numba 0.61
    if SourceTreeLocator not in impl._locator_classes:
        impl._locator_classes.insert(0, SourceTreeLocator)


_register()
