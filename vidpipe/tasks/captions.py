"""Prefect shell: Whisper captions of the ladder's 16 kHz audio."""

from __future__ import annotations

from functools import partial

from vidpipe.encoders.captions import Captions, captions_stage
from vidpipe.encoders.encode import LadderResult
from vidpipe.infra.config import options_from
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.models.asr import AsrOptions, transcribe
from vidpipe.tasks.common import stage_task


@stage_task("captions", "gpu")
def captions(source: SourceRef, ladder: LadderResult, settings: Settings, out: str) -> Captions:
    assert ladder.asr_audio is not None
    t = settings.transcribe
    asr = partial(transcribe, options=options_from(AsrOptions, t), cache_dir=t.models_dir)
    return captions_stage(
        source, ladder.asr_audio, ladder.duration_seconds, ladder.mpegts_offset_90k,
        open_storage(settings), settings.work_dir, out, asr,
    )  # fmt: skip
