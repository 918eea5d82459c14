"""Prefect shell: embeddings of what was said and seen, for semantic search."""

from __future__ import annotations

from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import Report
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.models import analysis
from vidpipe.models.detect import LabelSummary
from vidpipe.tasks.common import stage_task


@stage_task("embeddings", "gpu")
def embeddings(
    source: SourceRef,
    transcript: str | None,
    labels: tuple[LabelSummary, ...],
    settings: Settings,
    out: str,
) -> Report[analysis.Embeddings]:
    return analysis.embeddings_stage(
        source, transcript, labels, settings, open_storage(settings), out
    )
