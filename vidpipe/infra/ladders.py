"""The named ladders: ``configs/ladders/NAME.yaml``, or any YAML path.

A ladder lists the rungs wanted (height and target bitrate) and the audio;
``encoders.ladder.plan_ladder`` turns it into the renditions one source gets.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from vidpipe.infra.config import CONFIG_DIR, Section, explain, read_yaml
from vidpipe.infra.errors import ConfigError

LADDER_DIR = CONFIG_DIR / "ladders"


class RungSpec(Section):
    height: int = Field(ge=16, le=4320, description="Short side of the rung, pixels.")
    video_bitrate_kbps: int = Field(ge=32, le=200_000, description="Target video bitrate.")


class AudioSpec(Section):
    bitrate_kbps: int = Field(128, ge=16, le=512, description="AAC bitrate.")
    channels: int = Field(2, ge=1, le=2, description="Output channels; 5.1 is downmixed.")
    sample_rate_hz: int = Field(48000, description="Output sample rate.")


class Ladder(Section):
    name: str
    video: tuple[RungSpec, ...] = Field(min_length=1)
    audio: AudioSpec = AudioSpec()

    @model_validator(mode="after")
    def _sorted_unique(self) -> Ladder:
        heights = [r.height for r in self.video]
        if len(set(heights)) != len(heights):
            raise ValueError(f"ladder {self.name!r} repeats a rung height: {heights}")
        object.__setattr__(
            self, "video", tuple(sorted(self.video, key=lambda r: r.height, reverse=True))
        )
        return self


@cache
def _load_ladder_file(path: Path) -> Ladder:
    try:
        return Ladder(**read_yaml(path))
    except ValidationError as exc:
        raise explain(exc, Ladder, str(path)) from None


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
