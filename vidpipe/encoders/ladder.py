"""Ladder planning: which renditions to make from a source. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from vidpipe.encoders.probe import VideoInfo
from vidpipe.infra.ladders import Ladder

# Standard rates a measured average snaps to when it is within 0.5 %.
_STANDARD_FPS = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(48),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
)
_MIN_BITRATE_KBPS = 64


@dataclass(frozen=True)
class Rung:
    """One planned video rung: upright, even-sized, square-pixel, constant frame rate."""

    name: str  # e.g. avc_720p30_5000k
    width: int
    height: int
    fps: str  # exact output rate as "num/den", for ffmpeg's fps filter
    video_bitrate_kbps: int

    @property
    def fps_float(self) -> float:
        return float(Fraction(self.fps))


@dataclass(frozen=True)
class AudioRung:
    name: str  # e.g. aac_128k_2ch
    bitrate_kbps: int
    channels: int
    sample_rate_hz: int


@dataclass(frozen=True)
class LadderPlan:
    video: tuple[Rung, ...]  # top first
    audio: AudioRung | None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.video) + ((self.audio.name,) if self.audio else ())


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def _even_down(x: float) -> int:
    return max(2, int(x) // 2 * 2)


def output_fps(source_fps: float, cap: float) -> Fraction:
    """The constant output rate: the source's, snapped to a standard rate, at most ``cap``."""
    rate = Fraction(source_fps).limit_denominator(1001)
    nearest = min(_STANDARD_FPS, key=lambda std: abs(rate - std))
    if abs(rate - nearest) / nearest < Fraction(5, 1000):
        rate = nearest
    else:
        rate = Fraction(max(1, round(source_fps)))
    cap_rate = Fraction(cap).limit_denominator(1001)
    return min(rate, cap_rate)


def _fps_label(rate: Fraction) -> str:
    return str(round(float(rate)))


def plan_ladder(info: VideoInfo, ladder: Ladder, fps_cap: float) -> LadderPlan:
    """Rungs at or below the source's short side; never upscale.

    A source smaller than the lowest rung gets one rung at its own (even)
    size, with the lowest rung's bitrate scaled down by area.
    """
    audio = None
    if info.audio is not None:
        a = ladder.audio
        channels = min(a.channels, info.audio.channels)
        audio = AudioRung(
            name=f"aac_{a.bitrate_kbps}k_{channels}ch",
            bitrate_kbps=a.bitrate_kbps,
            channels=channels,
            sample_rate_hz=a.sample_rate_hz,
        )
    v = info.video
    if v is None:
        return LadderPlan(video=(), audio=audio)

    rate = output_fps(v.fps, fps_cap)
    w, h = v.display_width, v.display_height
    short, portrait = min(w, h), h > w
    rungs: list[Rung] = []
    for rung in ladder.video:
        if rung.height > short:
            continue
        rungs.append(_rendition(w, h, portrait, rung.height, rung.video_bitrate_kbps, rate))
    if not rungs:
        lowest = ladder.video[-1]
        area_ratio = (w * h) / (lowest.height * lowest.height * max(w, h) / short)
        kbps = max(_MIN_BITRATE_KBPS, round(lowest.video_bitrate_kbps * min(1.0, area_ratio)))
        rungs.append(_rendition(w, h, portrait, short, kbps, rate))
    return LadderPlan(video=tuple(rungs), audio=audio)


def _rendition(w: int, h: int, portrait: bool, short_px: int, kbps: int, rate: Fraction) -> Rung:
    out_w: float
    out_h: float
    if portrait:
        out_w, out_h = short_px, short_px * h / w
    else:
        out_w, out_h = short_px * w / h, short_px
    # Round to even, but never past the source (an odd 33 px becomes 32, not 34).
    out_w, out_h = min(_even(out_w), _even_down(w)), min(_even(out_h), _even_down(h))
    label = min(out_w, out_h)
    return Rung(
        name=f"avc_{label}p{_fps_label(rate)}_{kbps}k",
        width=out_w,
        height=out_h,
        fps=f"{rate.numerator}/{rate.denominator}",
        video_bitrate_kbps=kbps,
    )
