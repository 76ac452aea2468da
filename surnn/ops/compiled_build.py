"""Building and loading the compiled CPU kernel's C++ extension (``csrc/``; the ops that
call it are in ``compiled.py``).

Built with ``torch.utils.cpp_extension.load`` (g++, OpenMP, AVX2+FMA where the CPU has
them) on first use, by ``make setup`` or when a ``SelectiveUpdateGRU`` that may run it is
made (so that no timed forward pays for the build), and cached under
``build/torch_extensions/`` of the repository (``$SURNN_EXT_DIR`` overrides). A build's
folder is named by a key of what the library depends on: the sources, the flags (which
carry the SIMD level, so another CPU builds its own), torch, Python and the compiler. A
process whose key has a library loads it directly, whichever shell, PATH or ninja it
runs with (ninja is run only to build: a ninja of another version reads the other's build
log as absent and rebuilds everything). Processes sharing the folder build one at a time
under a file lock, each build in a folder of its own, the library moved into place when
complete, so a process never loads a half-written library. Without a compiler (or
ninja), or if the build fails, ``load()`` returns None after one warning and the
dispatcher runs the eager ``cpu`` path. ``SURNN_NO_COMPILED=1`` disables the kernel.
``SURNN_COMPILED_SANITIZE=1`` builds and loads a debug variant instead, instrumented with
AddressSanitizer and UndefinedBehaviorSanitizer (its own module name and folder, ``_san``),
for Python run with ``ASAN_OPTIONS=detect_leaks=0`` and
``LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"``
(libstdc++ too, else ASan cannot intercept C++ throws: a TORCH_CHECK would crash);
``UBSAN_OPTIONS=halt_on_error=1`` makes UB fatal. Imports nothing beyond torch and the
stdlib (and ``surnn.utils``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from surnn.utils import file_lock

_SRC = Path(__file__).resolve().parent / "csrc"
#: The extension's translation units (the headers beside them are in the build key too).
SOURCES = ("su_gru_bind.cpp", "su_gru_kernels.cpp", "dense.cpp")
_STATE: dict = {
    "tried": False,
    "ext": None,
    "error": None,
    "library": None,
    "built": False,
    "build_s": None,
}


def _simd_flags() -> list[str]:
    """AVX2+FMA when this CPU has both (else the compiler's baseline, still correct)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in info.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= flags else []


def _sanitize() -> bool:
    """SURNN_COMPILED_SANITIZE=1: the ASan+UBSan debug build (see the module docstring)."""
    return os.environ.get("SURNN_COMPILED_SANITIZE", "") not in ("", "0")


def build_dir() -> Path:
    """Where the extension is built and cached."""
    env = os.environ.get("SURNN_EXT_DIR")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists() and os.access(root, os.W_OK):
        return root / "build" / "torch_extensions"
    return Path.home() / ".cache" / "surnn_torch_extensions"


def _warn(msg: str) -> None:
    warnings.warn(
        f"surnn: the compiled CPU kernel is unavailable ({msg}); the eager 'cpu' path runs "
        "instead (install g++ and `pip install ninja`, then rerun)",
        RuntimeWarning,
        stacklevel=3,
    )


def build_key(name: str, cflags: list[str], ldflags: list[str], cxx: str) -> str:
    """What a built library depends on, hashed: every file of csrc/, the module name and
    flags, torch's and Python's versions and ABI, and the compiler (its resolved path,
    size and modification time). Not ninja, PATH or the shell."""
    h = hashlib.sha256()
    compiler = Path(shutil.which(cxx) or cxx).resolve()
    st = compiler.stat() if compiler.exists() else None
    facts = [
        name,
        *cflags,
        "--",
        *ldflags,
        torch.__version__,
        str(torch.version.git_version),
        sys.version,
        str(sysconfig.get_config_var("EXT_SUFFIX")),
        str(compiler),
        f"{st.st_size}:{st.st_mtime_ns}" if st else "",
    ]
    for fact in facts:
        h.update(fact.encode() + b"\0")
    for src in sorted(_SRC.iterdir()):
        if src.is_file():
            h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def library(where: Path, name: str, build: Callable[[Path], ModuleType | None]):
    """``(path of where/<name>.so, module or None, built)``: the library of one key.
    Present: nothing runs. Missing: under a lock on ``where``.lock, ``build(tmp)`` builds
    ``<name>.so`` in a fresh folder beside ``where`` (returning the module if it loaded
    it), which is then moved into place; a process that waited on the lock finds it
    built. A failed build raises and leaves nothing behind."""
    so = where / f"{name}.so"
    if so.exists():
        return so, None, False
    where.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(where.parent / f"{where.name}.lock"):
        if so.exists():  # built by another process while this one waited
            return so, None, False
        tmp = Path(tempfile.mkdtemp(prefix=f"{where.name}.build-", dir=where.parent))
        try:
            module = build(tmp)
            where.mkdir(exist_ok=True)
            os.replace(tmp / f"{name}.so", so)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return so, module, True


def _import(name: str, so: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(verbose: bool = False):
    """The extension module, built on first call (cached on disk), or None (one warning)."""
    if _STATE["tried"]:
        return _STATE["ext"]
    _STATE["tried"] = True
    if os.environ.get("SURNN_NO_COMPILED", "") not in ("", "0"):
        _STATE["error"] = "disabled by SURNN_NO_COMPILED"
        return None
    cxx = os.environ.get("CXX", "c++")
    error = None
    if shutil.which(cxx) is None:
        error = f"no C++ compiler: {cxx!r} not found on PATH"
    elif _sanitize() and "libasan" not in os.environ.get("LD_PRELOAD", ""):
        # An ASan library loaded into an uninstrumented python aborts the process.
        error = "SURNN_COMPILED_SANITIZE=1 needs LD_PRELOAD=$(gcc -print-file-name=libasan.so)"
    if error is None:
        simd = _simd_flags()
        name = "surnn_su_gru" + ("_avx2" if simd else "")
        cflags, ldflags = ["-O3", "-fopenmp", *simd], ["-fopenmp"]
        if _sanitize():
            name += "_san"
            san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
            cflags, ldflags = ["-O1", "-fopenmp", *simd, *san], ["-fopenmp", san[0]]
        where = build_dir() / f"{name}-{build_key(name, cflags, ldflags, cxx)}"

        def build(tmp: Path) -> ModuleType:
            from torch.utils import cpp_extension

            if not cpp_extension.is_ninja_available():
                raise RuntimeError("ninja is missing (`pip install ninja`)")
            print(
                f"surnn: building the compiled CPU kernel in {where} (one time; about a "
                "minute on 2 cores)...",
                file=sys.stderr,
                flush=True,
            )
            return cpp_extension.load(
                name=name,
                sources=[str(_SRC / n) for n in SOURCES],
                extra_cflags=cflags,
                extra_ldflags=ldflags,
                build_directory=str(tmp),
                verbose=verbose,
            )

        try:
            t0 = time.perf_counter()
            so, ext, built = library(where, name, build)
            ext = ext or _import(name, so)
            _STATE.update(ext=ext, library=so, built=built, build_s=time.perf_counter() - t0)
            if built:
                print(f"surnn: built in {_STATE['build_s']:.0f} s", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - any build failure means: run the eager path
            lines = str(e).strip().splitlines()
            error = f"build failed: {type(e).__name__}: {lines[-1] if lines else ''}"
            if "ninja is missing" in str(e):
                error = "ninja is missing (`pip install ninja`)"
    if error is not None:
        _STATE["error"] = error
        _warn(error)
    return _STATE["ext"]


def available() -> bool:
    """True when the extension is built (or builds now) and loads."""
    return load() is not None
