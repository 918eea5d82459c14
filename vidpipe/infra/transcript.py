"""A transcript: what speech recognition writes and captions are made from.

Typed here, below both ``models/`` (``asr`` fills it) and ``encoders/``
(``captions`` writes WebVTT, SRT, JSON and the HLS subtitle playlist from it),
so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    start: float  # seconds from the start of the audio
    end: float  # seconds
    text: str  # as the model wrote it, usually with a leading space
    probability: float  # 0..1


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the audio
    end: float  # seconds, >= start
    text: str  # stripped, never empty
    avg_logprob: float  # mean token log probability, <= 0
    no_speech_prob: float  # 0..1, the model's belief that the window held no speech
    words: tuple[Word, ...] = ()  # empty unless word_timestamps


@dataclass(frozen=True)
class Transcript:
    """Segments of one file, plus how they were made."""

    language: str | None  # ISO 639-1; None when no speech was found and none was fixed
    language_probability: float  # 0..1; 1.0 when fixed, 0.0 when nothing was detected
    segments: tuple[Segment, ...]
    engine: str
    model: str  # the model option as given
    duration_seconds: float  # length of the audio
    no_speech: bool  # True when there are no segments

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)
