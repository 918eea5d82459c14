"""Caption files from transcript segments: WebVTT, SRT, transcript.json, HLS playlist.

Plain functions over ``vidpipe.infra.transcript.Transcript`` (this module sits
below ``models/`` and never imports it, nor torch or whisper). Cue times are
whole milliseconds; every cue has text and ends strictly after it starts.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import m3u8
import webvtt

from vidpipe.encoders.hls import SubtitleTrack
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import StoredFile, upload_tree
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.storage import Storage
from vidpipe.infra.transcript import Segment, Transcript

MPEGTS_CLOCK_HZ = 90_000
_MPEGTS_WRAP = 1 << 33  # PTS is a 33-bit counter


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int  # > start_ms
    text: str  # one line, never empty


def cues(segments: Iterable[Segment]) -> list[Cue]:
    """Segments as cues: whitespace collapsed, empty ones dropped, end > start (ms)."""
    out: list[Cue] = []
    for s in segments:
        text = " ".join(s.text.split()).replace("-->", "->")
        if not text:
            continue
        start_ms = max(0, round(s.start * 1000))
        end_ms = max(round(s.end * 1000), start_ms + 1)
        out.append(Cue(start_ms, end_ms, text))
    return out


def _clock(ms: int, separator: str) -> str:
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def timestamp_map(mpegts_offset_90k: int) -> str:
    """The ``X-TIMESTAMP-MAP`` header line mapping cue time 0 to an MPEG-TS time (90 kHz)."""
    if not 0 <= mpegts_offset_90k < _MPEGTS_WRAP:
        raise ValueError(f"MPEG-TS offset {mpegts_offset_90k} is outside 0..2^33-1")
    return f"X-TIMESTAMP-MAP=MPEGTS:{mpegts_offset_90k},LOCAL:00:00:00.000"


def to_webvtt(segments: Iterable[Segment], *, mpegts_offset_90k: int | None = None) -> str:
    """WebVTT text: ``WEBVTT``, then (for HLS) an ``X-TIMESTAMP-MAP`` line, then the cues.

    ``mpegts_offset_90k`` is the MPEG-TS presentation time (90 kHz ticks) that
    cue time 0 lines up with, usually the first video PTS of the rendition;
    None writes no map line.
    """
    vtt = webvtt.WebVTT(
        captions=[
            webvtt.Caption(_clock(c.start_ms, "."), _clock(c.end_ms, "."), _vtt_escape(c.text))
            for c in cues(segments)
        ],
        metadata=[timestamp_map(mpegts_offset_90k)] if mpegts_offset_90k is not None else [],
    )
    return str(vtt.content)


def to_srt(segments: Iterable[Segment]) -> str:
    """SubRip text: numbered cues from 1, ``HH:MM:SS,mmm`` times, blank line between.

    Written here, not by webvtt-py: its SRT writer drops anything shaped like a
    tag (``<your>``), and SubRip is plain text.
    """
    blocks = [
        f"{i}\n{_clock(c.start_ms, ',')} --> {_clock(c.end_ms, ',')}\n{c.text}\n"
        for i, c in enumerate(cues(segments), start=1)
    ]
    return "\n".join(blocks)


def transcript_dict(transcript: Transcript, *, words: bool = True) -> dict[str, Any]:
    """The transcript.json document (times in seconds); ``words`` only where present."""

    def segment(s: Segment) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": s.start,
            "end": s.end,
            "text": s.text,
            "avg_logprob": s.avg_logprob,
            "no_speech_prob": s.no_speech_prob,
        }
        if words and s.words:
            out["words"] = [
                {"start": w.start, "end": w.end, "text": w.text, "probability": w.probability}
                for w in s.words
            ]
        return out

    return {
        "language": transcript.language,
        "language_probability": transcript.language_probability,
        "engine": transcript.engine,
        "model": transcript.model,
        "duration_seconds": transcript.duration_seconds,
        "no_speech": transcript.no_speech,
        "segments": [segment(s) for s in transcript.segments],
    }


def to_transcript_json(transcript: Transcript) -> str:
    """``transcript_dict`` as indented UTF-8 JSON text."""
    return json.dumps(transcript_dict(transcript), ensure_ascii=False, indent=2) + "\n"


def subtitle_playlist(vtt_uri: str, duration_seconds: float) -> str:
    """A VOD HLS media playlist holding one WebVTT segment that spans the video.

    ``vtt_uri`` is relative to the playlist; ``duration_seconds`` is the
    video's duration (TARGETDURATION is its ceiling, at least 1).
    """
    if not math.isfinite(duration_seconds) or duration_seconds < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0: {duration_seconds}")
    if not vtt_uri or any(ch in vtt_uri for ch in "\r\n"):
        raise ValueError(f"bad subtitle URI {vtt_uri!r}")
    duration = round(duration_seconds, 3)
    playlist = m3u8.M3U8()
    playlist.version = 3
    playlist.target_duration = max(1, math.ceil(duration))
    playlist.media_sequence = 0
    playlist.playlist_type = "vod"
    playlist.is_endlist = True
    playlist.add_segment(m3u8.model.Segment(uri=vtt_uri, duration=duration))
    return str(playlist.dumps())


@dataclass(frozen=True)
class CaptionFiles:
    vtt: Path
    srt: Path
    transcript_json: Path
    playlist: Path  # HLS media playlist pointing at ``vtt``


def write_captions(
    transcript: Transcript,
    out_dir: Path,
    *,
    mpegts_offset_90k: int | None = None,
    stem: str = "captions",
    duration_seconds: float | None = None,
) -> CaptionFiles:
    """Write ``{stem}.vtt``, ``{stem}.srt``, ``transcript.json`` and ``{stem}.m3u8``.

    Each file is written to a temp name and renamed. The playlist's duration
    is ``duration_seconds`` (the video's), else the transcript's.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files = CaptionFiles(
        out_dir / f"{stem}.vtt",
        out_dir / f"{stem}.srt",
        out_dir / "transcript.json",
        out_dir / f"{stem}.m3u8",
    )
    _write_text(files.vtt, to_webvtt(transcript.segments, mpegts_offset_90k=mpegts_offset_90k))
    _write_text(files.srt, to_srt(transcript.segments))
    _write_text(files.transcript_json, to_transcript_json(transcript))
    span = transcript.duration_seconds if duration_seconds is None else duration_seconds
    _write_text(files.playlist, subtitle_playlist(files.vtt.name, span))
    return files


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LANGUAGE_NAMES = {
    "en": "English", "de": "Deutsch", "fr": "Français", "es": "Español", "it": "Italiano",
    "pt": "Português", "nl": "Nederlands", "ja": "日本語", "zh": "中文", "ru": "Русский",
}  # fmt: skip


@dataclass(frozen=True)
class Captions:
    """The captions stage's result: what was said, in which language, and where the files are."""

    status: str  # "ok" | "no speech detected"
    language: str | None  # ISO 639-1
    language_probability: float
    engine: str
    model: str
    segments: int
    transcript: str  # transcript.json, relative to videos/{id}/
    vtt: str | None  # None when no speech was detected
    srt: str | None
    subtitles: tuple[SubtitleTrack, ...]  # the SUBTITLES group of the master
    files: tuple[StoredFile, ...]

    def manifest(self) -> dict[str, Any]:
        return {
            "status": self.status, "language": self.language,
            "language_probability": self.language_probability, "engine": self.engine,
            "model": self.model, "segments": self.segments, "transcript": self.transcript,
            "vtt": self.vtt, "srt": self.srt,
        }  # fmt: skip


def captions_stage(
    source: SourceRef,
    asr_audio: str,
    duration_seconds: float,
    mpegts_offset_90k: int | None,
    storage: Storage,
    work_dir: Path,
    out: str,
    transcribe: Callable[[Path], Transcript],
) -> Captions:
    """Transcribe the attempt's 16 kHz audio with ``transcribe``; store captions under ``out``.

    No speech gives an empty transcript and no subtitle track; that is not an error.
    """
    base = f"videos/{source.video_id}"
    with scratch_dir(work_dir / source.video_id, f"captions-{out.rsplit('/', 1)[-1]}") as tmp:
        audio = storage.fetch(f"{base}/{asr_audio}", tmp / "audio.flac")
        transcript = transcribe(audio)
        lang = transcript.language or "und"
        folder = tmp / "out"
        files = write_captions(transcript, folder, mpegts_offset_90k=mpegts_offset_90k,
                               stem=lang, duration_seconds=duration_seconds)  # fmt: skip
        if transcript.no_speech:  # keep the (empty) transcript, publish no track
            for path in (files.vtt, files.srt, files.playlist):
                path.unlink()
        stored = upload_tree(storage, folder, base, out)
    speech = not transcript.no_speech
    tracks = (
        (
            SubtitleTrack(
                f"{out}/{files.playlist.name}", lang, f"{LANGUAGE_NAMES.get(lang, lang)} (auto)"
            ),
        )
        if speech
        else ()
    )
    return Captions(
        status="ok" if speech else "no speech detected",
        language=transcript.language,
        language_probability=round(transcript.language_probability, 4),
        engine=transcript.engine,
        model=transcript.model,
        segments=len(transcript.segments),
        transcript=f"{out}/transcript.json",
        vtt=f"{out}/{files.vtt.name}" if speech else None,
        srt=f"{out}/{files.srt.name}" if speech else None,
        subtitles=tracks,
        files=stored,
    )
