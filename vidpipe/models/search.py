"""Search over published videos: one ranked list from what was said, what was
seen, and (with image weights) what the pictures look like.

Each hit says why it matched:

- ``transcript``: a caption segment near the query (MiniLM cosine, pgvector HNSW);
- ``label``: a detected label whose name means what the query says (MiniLM
  cosine of the query and the label's name), at the second it was first seen;
- ``picture``: a sampled frame near the query in the image model's space.
  No package on the registries ships CLIP-family weights
  (``embed.IMAGE_WEIGHTS_SEARCHED``), so this side reports ``unavailable``
  with the reason and adds nothing; frame vectors are not stored in the
  catalog yet either (``PICTURES_NOT_STORED``).

Scores on the text sides are the same cosine similarity of unit MiniLM
vectors, so they rank together. A label hit must clear ``label_min_score``
(0.35), chosen on measured pairs (query, class name): "someone riding a
bike" / ``bicycle`` 0.70, "a car on the road" / ``car`` 0.67, "a man
talking" / ``person`` 0.36 count; "stock prices" / ``person`` 0.13, "a car
on the road" / ``bicycle`` 0.30 and "a rabbit in a meadow" / ``dog`` 0.24 do
not. MiniLM does not equate plurals with a class name ("people walking in
the street" / ``person`` 0.25), so such a query finds only its transcript hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from vidpipe.infra.catalog import Catalog
from vidpipe.infra.settings import Settings
from vidpipe.models.embed import EmbedOptions, embed_texts, image_model_unavailable
from vidpipe.models.vision import StageStatus

Why = Literal["transcript", "label", "picture"]
LABEL_MIN_SCORE = 0.35
PICTURES_NOT_STORED = (
    "the embeddings stage does not store frame embeddings in the catalog yet, so there is "
    "nothing to search by picture even with embed.image_weights set"
)


@dataclass(frozen=True)
class Hit:
    video_id: str
    at_seconds: float  # where to start playing
    score: float  # cosine similarity, 1 = identical meaning
    why: Why
    detail: str  # the segment's text, or the label and how long it was on screen


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: tuple[Hit, ...]
    pictures: StageStatus  # whether the picture side ran, and why not


def embed_options(settings: Settings) -> EmbedOptions:
    """The embedding models the embeddings stage used, so queries land in the same space."""
    return replace(
        EmbedOptions(),
        text_model=settings.embed.text_model,
        image_weights=settings.embed.image_weights,
        device=settings.embed.device,
    )


def search(
    catalog: Catalog,
    query: str,
    settings: Settings,
    *,
    limit: int = 10,
    label: str | None = None,
    label_min_score: float = LABEL_MIN_SCORE,
) -> SearchResult:
    """The ``limit`` best hits for ``query`` among published videos, best first.

    ``label`` keeps only videos where that label was detected.
    """
    options = embed_options(settings)
    vector = embed_texts([query], options)[0]
    hits = [
        Hit(h.video_id, h.start_seconds, h.score, "transcript", h.text)
        for h in catalog.search(vector, limit=limit, label=label)
    ]
    hits += label_hits(catalog, vector, options, label_min_score, only=label)
    reason = image_model_unavailable(options)
    pictures = StageStatus("unavailable", reason or PICTURES_NOT_STORED)
    ranked = sorted(hits, key=lambda h: (-h.score, h.video_id, h.at_seconds))
    return SearchResult(query, tuple(_one_per_moment(ranked)[:limit]), pictures)


def label_hits(
    catalog: Catalog,
    query_vector: Sequence[float],
    options: EmbedOptions,
    min_score: float,
    only: str | None = None,
) -> list[Hit]:
    """Videos showing a label whose name is near the query, at its first appearance."""
    seen = catalog.published_labels()
    if only is not None:
        seen = [s for s in seen if s.label == only]
    names = sorted({s.label for s in seen})
    if not names:
        return []
    vectors = np.asarray(embed_texts([n.replace("_", " ") for n in names], options))
    scores = dict(zip(names, (vectors @ np.asarray(query_vector)).tolist(), strict=True))
    return [
        Hit(
            s.video_id,
            s.first_seen_seconds,
            scores[s.label],
            "label",
            f"{s.label}: {s.seconds_present:.1f} s on screen, max conf {s.max_confidence:.2f}",
        )
        for s in seen
        if scores[s.label] >= min_score
    ]


def _one_per_moment(hits: Sequence[Hit]) -> list[Hit]:
    """Drop a hit that points at the same video and second as a better one."""
    kept: list[Hit] = []
    seen: set[tuple[str, float]] = set()
    for h in hits:
        moment = (h.video_id, round(h.at_seconds, 1))
        if moment not in seen:
            seen.add(moment)
            kept.append(h)
    return kept
