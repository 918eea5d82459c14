"""Prefect shell: transcribe the transcode's 16 kHz audio into captions.

The wiring (fetch the audio, run the engine, write caption files, upload) is
a plain function; the task adds caching, retries and a run name. Captions land
at ``videos/{id}/captions/{options hash}/``: deterministic, so a re-run writes
the same keys with the same content. The publish step turns the result into a
SUBTITLES group in the master.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from vidpipe.encoders import captions, hls
from vidpipe.encoders.pipeline import StageOutput, StoredFile, TranscodeResult, upload_tree
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.settings import Settings, TranscribeSettings, options_hash
from vidpipe.infra.storage import Storage, open_storage
from vidpipe.models.asr import AsrOptions, transcribe
from vidpipe.tasks.common import RETRY_TRANSIENT, stage_cache

TRANSCRIBE_VERSION = 1

LANGUAGE_NAMES = {
    "en": "English", "de": "Deutsch", "fr": "Français", "es": "Español", "it": "Italiano",
    "pt": "Português", "nl": "Nederlands", "ja": "日本語", "zh": "中文", "ru": "Русский",
}  # fmt: skip


def asr_options(t: TranscribeSettings) -> AsrOptions:
    return AsrOptions(
        engine=t.engine, model=t.model, language=t.language, device=t.device,
        compute_type=t.compute_type, beam_size=t.beam_size, vad=t.vad,
        word_timestamps=t.word_timestamps, threads=t.threads,
    )  # fmt: skip


def timestamp_offset_90k(result: TranscodeResult) -> int | None:
    """The X-TIMESTAMP-MAP offset cues need, or None when media starts at zero.

    MPEG-TS segments start at ffmpeg's 1.4 s muxing offset; fMP4 at zero.
    """
    first = result.audio or (result.video[0] if result.video else None)
    if first is None or first.start_pts_90k == 0:
        return None
    return first.start_pts_90k


def transcribe_stage(
    source: SourceRef,
    encoded: TranscodeResult,
    settings: Settings,
    storage: Storage,
    options_key: str,
) -> StageOutput:
    """Transcribe the attempt's 16 kHz audio; store captions under ``captions/{options_key}/``.

    No speech gives an empty transcript and no subtitle track; that is not an error.
    """
    assert encoded.asr_audio is not None
    base = f"videos/{source.video_id}"
    with scratch_dir(settings.work_dir / source.video_id, f"asr-{options_key}") as tmp:
        audio = storage.fetch(f"{base}/{encoded.asr_audio}", tmp / "audio.flac")
        transcript = transcribe(
            audio, asr_options(settings.transcribe), cache_dir=settings.transcribe.models_dir
        )
        lang = transcript.language or "und"
        out = tmp / "out"
        files = captions.write_captions(
            transcript, out, mpegts_offset_90k=timestamp_offset_90k(encoded), stem=lang
        )
        prefix = f"captions/{options_key}"
        if transcript.no_speech:  # keep the (empty) transcript, publish no track
            for path in (files.vtt, files.srt, files.playlist):
                path.unlink()
        stored: tuple[StoredFile, ...] = upload_tree(storage, out, base, prefix)
    summary = {
        "status": "no speech detected" if transcript.no_speech else "ok",
        "language": transcript.language,
        "language_probability": round(transcript.language_probability, 4),
        "engine": transcript.engine,
        "model": transcript.model,
        "segments": len(transcript.segments),
        "transcript": f"{prefix}/transcript.json",
        "vtt": None if transcript.no_speech else f"{prefix}/{files.vtt.name}",
        "srt": None if transcript.no_speech else f"{prefix}/{files.srt.name}",
    }
    tracks: tuple[hls.SubtitleTrack, ...] = ()
    if not transcript.no_speech:
        name = f"{LANGUAGE_NAMES.get(lang, lang)} (auto)"
        tracks = (hls.SubtitleTrack(f"{prefix}/{files.playlist.name}", lang, name),)
    return StageOutput("captions", summary, stored, tracks)


def settings_hash(s: Settings) -> str:
    """The transcribe settings that change its output (not where or how fast it runs)."""
    return options_hash(
        s.transcribe.model_dump(exclude={"enabled", "models_dir", "threads", "device"})
    )


def _options(p: dict[str, Any]) -> str:
    s: Settings = p["settings"]
    encoded: TranscodeResult = p["encoded"]
    upstream = options_hash(
        {"offset": timestamp_offset_90k(encoded), "audio": encoded.asr_audio},
        open_storage(s).identity(),
    )
    return f"{settings_hash(s)}.{upstream}"


@task(
    name="transcribe",
    task_run_name="transcribe-{source.video_id}",
    cache_policy=stage_cache("transcribe", TRANSCRIBE_VERSION, _options),
    persist_result=True,
    **RETRY_TRANSIENT,
    tags=["transcribe"],
)
def transcribe_audio(
    source: SourceRef, encoded: TranscodeResult, settings: Settings
) -> StageOutput:
    return transcribe_stage(
        source,
        encoded,
        settings,
        open_storage(settings),
        _options({"settings": settings, "encoded": encoded}),
    )
