"""A video plays while it encodes ('playable'); stages named after what they write.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = r"""
ALTER TABLE videos DROP CONSTRAINT videos_status_check;
ALTER TABLE videos ADD CONSTRAINT videos_status_check CHECK (
    status IN ('uploaded', 'processing', 'playable', 'published', 'failed', 'rejected'));

-- The same transition table as catalog.records.TRANSITIONS. A configuration
-- error returns a video to 'uploaded': the upload is fine, the setup was not.
CREATE OR REPLACE FUNCTION check_video_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND (OLD.status, NEW.status) NOT IN (
        ('uploaded', 'processing'),
        ('processing', 'playable'), ('processing', 'published'), ('processing', 'failed'),
        ('processing', 'rejected'), ('processing', 'uploaded'),
        ('playable', 'processing'), ('playable', 'published'), ('playable', 'failed'),
        ('playable', 'rejected'), ('playable', 'uploaded'),
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

-- One name per concept: a stage is named after what it writes.
UPDATE stage_runs SET stage = CASE stage
    WHEN 'transcode' THEN 'ladder' WHEN 'transcribe' THEN 'captions'
    WHEN 'detect' THEN 'detections' WHEN 'embed' THEN 'embeddings' ELSE stage END
WHERE stage IN ('transcode', 'transcribe', 'detect', 'embed');
"""

DOWNGRADE = r"""
UPDATE stage_runs SET stage = CASE stage
    WHEN 'ladder' THEN 'transcode' WHEN 'captions' THEN 'transcribe'
    WHEN 'detections' THEN 'detect' WHEN 'embeddings' THEN 'embed' ELSE stage END
WHERE stage IN ('ladder', 'captions', 'detections', 'embeddings');
UPDATE videos SET status = 'processing' WHERE status = 'playable';
CREATE OR REPLACE FUNCTION check_video_transition() RETURNS trigger LANGUAGE plpgsql AS $$
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
ALTER TABLE videos DROP CONSTRAINT videos_status_check;
ALTER TABLE videos ADD CONSTRAINT videos_status_check CHECK (
    status IN ('uploaded', 'processing', 'published', 'failed', 'rejected'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
