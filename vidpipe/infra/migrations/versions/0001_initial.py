"""The catalog: videos, stage runs, renditions, assets, transcripts, detections,
safety verdicts and fingerprints.

Revision ID: 0001
Revises: -
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Runs with search_path = vidpipe (then the schema holding pgvector, then public),
# so every name below lands in the vidpipe schema.
UPGRADE = r"""
CREATE EXTENSION IF NOT EXISTS vector;

-- Bumps updated_at only when some other column really changed, so an
-- idempotent re-write (ON CONFLICT ... DO UPDATE ... WHERE distinct) leaves
-- the row exactly as it was.
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE TABLE videos (
    id                text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    source_sha256     text NOT NULL CHECK (source_sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes        bigint NOT NULL CHECK (size_bytes >= 0),
    source_key        text,
    kind              text CHECK (kind IN ('audio+video', 'video-only', 'audio-only')),
    duration_seconds  double precision CHECK (duration_seconds >= 0),
    probe             jsonb,
    status            text NOT NULL DEFAULT 'uploaded' CONSTRAINT videos_status_check CHECK (
                          status IN ('uploaded', 'processing', 'published', 'failed', 'rejected')),
    error             text,
    published_attempt text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT videos_published_has_attempt
        CHECK (status <> 'published' OR published_attempt IS NOT NULL)
);
-- Not unique: an explicit --video-id may register the same bytes twice.
CREATE INDEX videos_source_sha256_idx ON videos (source_sha256);
CREATE INDEX videos_status_idx ON videos (status, updated_at DESC);

-- The same transition table as catalog.TRANSITIONS, so a stray UPDATE from
-- psql cannot skip a state either; the published pointer moves only together
-- with the status becoming 'published'.
CREATE FUNCTION check_video_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND (OLD.status, NEW.status) NOT IN (
        ('uploaded', 'processing'),
        ('processing', 'published'), ('processing', 'failed'), ('processing', 'rejected'),
        ('failed', 'processing'), ('rejected', 'processing'), ('published', 'processing')
    ) THEN
        RAISE EXCEPTION 'illegal video status transition: % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.published_attempt IS DISTINCT FROM OLD.published_attempt
       AND NEW.status <> 'published' THEN
        RAISE EXCEPTION 'the published attempt changes only when publishing'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER videos_a_check_transition BEFORE UPDATE ON videos
    FOR EACH ROW EXECUTE FUNCTION check_video_transition();
CREATE TRIGGER videos_b_touch BEFORE UPDATE ON videos
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE stage_runs (
    video_id      text NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    stage         text NOT NULL,
    stage_version text NOT NULL,
    options_hash  text NOT NULL,
    status        text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    attempt       text,
    started_at    timestamptz,
    finished_at   timestamptz,
    wall_seconds  double precision CHECK (wall_seconds >= 0),
    cpu_seconds   double precision CHECK (cpu_seconds >= 0),
    gpu_seconds   double precision CHECK (gpu_seconds >= 0),
    cached        boolean NOT NULL DEFAULT false,
    error         text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (video_id, stage, stage_version, options_hash)
);
CREATE TRIGGER stage_runs_touch BEFORE UPDATE ON stage_runs
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE renditions (
    video_id         text NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    attempt          text NOT NULL,
    name             text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('video', 'audio')),
    playlist         text NOT NULL,
    codecs           text NOT NULL,
    width            integer NOT NULL CHECK (width >= 0),
    height           integer NOT NULL CHECK (height >= 0),
    fps              double precision NOT NULL CHECK (fps >= 0),
    target_kbps      integer NOT NULL CHECK (target_kbps >= 0),
    average_kbps     double precision NOT NULL CHECK (average_kbps >= 0),
    peak_kbps        double precision NOT NULL CHECK (peak_kbps >= 0),
    segments         integer NOT NULL CHECK (segments >= 0),
    duration_seconds double precision NOT NULL CHECK (duration_seconds >= 0),
    bytes            bigint NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (video_id, attempt, name)
);

CREATE TABLE assets (
    video_id text NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    attempt  text NOT NULL,
    key      text NOT NULL,  -- relative to videos/{video_id}/
    kind     text NOT NULL,
    sha256   text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes    bigint NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (video_id, key)
);
CREATE INDEX assets_attempt_idx ON assets (video_id, attempt);

CREATE TABLE transcript_segments (
    video_id      text NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    attempt       text NOT NULL,
    idx           integer NOT NULL CHECK (idx >= 0),
    start_seconds double precision NOT NULL CHECK (start_seconds >= 0),
    end_seconds   double precision NOT NULL CHECK (end_seconds >= start_seconds),
    text          text NOT NULL,
    language      text,
    embedding     vector(384),
    PRIMARY KEY (video_id, attempt, idx)
);
CREATE INDEX transcript_segments_embedding_hnsw
    ON transcript_segments USING hnsw (embedding vector_cosine_ops);

CREATE TABLE detection_summaries (
    video_id           text NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    label              text NOT NULL,
    frames             integer NOT NULL CHECK (frames >= 0),  -- sampled frames showing it
    seconds_present    double precision NOT NULL CHECK (seconds_present >= 0),
    max_confidence     double precision NOT NULL CHECK (max_confidence BETWEEN 0 AND 1),
    first_seen_seconds double precision NOT NULL CHECK (first_seen_seconds >= 0),
    last_seen_seconds  double precision NOT NULL CHECK (last_seen_seconds >= first_seen_seconds),
    PRIMARY KEY (video_id, label)
);
CREATE INDEX detection_summaries_label_idx ON detection_summaries (label);

CREATE TABLE safety_verdicts (
    video_id   text NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    check_name text NOT NULL,
    status     text NOT NULL CHECK (status IN ('ok', 'unavailable', 'error')),  -- did it run
    score      double precision,
    verdict    text CHECK (length(verdict) BETWEEN 1 AND 64),  -- "ok", "flagged", "no_faces"...
    details    jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (video_id, check_name)
);

-- One 64-bit perceptual hash per sampled frame, stored signed, with the
-- frame's time in seconds; near_duplicates() matches them with bit_count(xor).
CREATE TABLE fingerprints (
    video_id    text PRIMARY KEY REFERENCES videos (id) ON DELETE CASCADE,
    hashes      bigint[] NOT NULL CHECK (cardinality(hashes) > 0),
    frame_times double precision[] NOT NULL,
    CHECK (cardinality(hashes) = cardinality(frame_times))
);
"""

DOWNGRADE = r"""
DROP TABLE IF EXISTS fingerprints, safety_verdicts, detection_summaries, transcript_segments,
    assets, renditions, stage_runs, videos;
DROP FUNCTION IF EXISTS check_video_transition();
DROP FUNCTION IF EXISTS touch_updated_at();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
