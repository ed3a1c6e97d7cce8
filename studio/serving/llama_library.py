"""llama.cpp as the studio loads it (llama-cpp-python's C API): whether it is installed and how it
was built, the library set up once per process, and whether it writes this studio's drafts."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

from studio.errors import ModelError

log = logging.getLogger(__name__)


def available() -> str | None:
    """Why llama.cpp cannot serve here, or None when it can (llama-cpp-python is installed)."""
    try:
        import llama_cpp  # noqa: F401  (loads the shared library)
    except (ImportError, OSError) as exc:
        return f"llama-cpp-python is not installed or does not load ({exc})"
    return None


def gguf_obstacle(settings) -> str | None:
    """Why llama.cpp does not write this studio's drafts, or None when it does. --engine auto chooses
    it wherever it can serve: on a CPU, for the embedded model, which ships as a GGUF file (a
    fine-tuned version's adapter is converted: gguf_adapter.py). --engine llama.cpp insists, and
    says why it cannot."""
    from studio.config import EMBEDDED_MODEL

    if settings.backend != "local" or settings.engine == "transformers":
        return "--engine transformers" if settings.backend == "local" else "a server writes the drafts"
    reason = None
    if settings.model != EMBEDDED_MODEL:
        reason = f"{settings.model} has no GGUF file (the embedded model has)"
    elif settings.quantize != "none":
        reason = f"--quantize {settings.quantize} serves torch's quantised weights"
    elif settings.device == "cuda" or (settings.device == "auto" and _cuda()):
        reason = "on CUDA transformers writes faster"
    else:
        reason = available()
    if reason is not None and settings.engine == "llama.cpp":
        raise ModelError(f"--engine llama.cpp cannot serve: {reason}. Use --engine auto or transformers.")
    return reason


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def library():
    import llama_cpp

    if not getattr(library, "ready", False):
        llama_cpp.llama_backend_init()
        _quiet(llama_cpp)
        if built_with_openmp():
            log.warning(OPENMP_WARNING)
        library.ready = True
    return llama_cpp


# torch ships its own libgomp.so.1, and a llama.cpp built with OpenMP shares it in this process. Once
# torch has run anything on several threads (converting the model, a transformers draft), libgomp
# counts more threads than cores and stops spinning at llama.cpp's barriers: drafts then stream at
# two thirds of their speed (measured: 76 tokens/s after torch work against 110 before; without OpenMP 116 and 121).
OPENMP_WARNING = (
    "llama.cpp was built with OpenMP, which shares torch's threads in this process: drafts may stream "
    "at two thirds of their speed. Rebuild it without: pip install --force-reinstall --no-cache-dir --no-deps "
    "llama-cpp-python==0.3.36 --config-settings=cmake.args=-DGGML_OPENMP=OFF")


def built_with_openmp() -> bool:
    """Whether the installed llama.cpp's CPU backend links OpenMP (its library names libgomp)."""
    from llama_cpp import llama_cpp

    libraries = Path(getattr(llama_cpp, "_base_path", Path(llama_cpp.__file__).parent / "lib"))  # or $LLAMA_CPP_LIB_PATH
    return any(b"libgomp" in path.read_bytes() for path in libraries.glob("libggml-cpu*.so*") if path.is_file())


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _log_errors(level: int, text: bytes, _data) -> None:
    # llama.cpp prints every tensor it loads; only its errors (level 4) belong in the studio's log.
    if level == 4 and text:
        log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def _quiet(llama_cpp) -> None:
    llama_cpp.llama_log_set(_log_errors, ctypes.c_void_p(0))
