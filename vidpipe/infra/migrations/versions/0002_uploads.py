"""The upload service: tus uploads in progress, hand-offs to the pipeline, bucket-hook events.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = r"""
-- One row per tus upload. What the store holds is the truth about how many
-- bytes arrived (offset_hint is only what the last PATCH saw, for the
-- janitor); length is NULL while the client defers it.
CREATE TABLE uploads (
    id             text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    length         bigint CHECK (length >= 0),
    offset_hint    bigint NOT NULL DEFAULT 0 CHECK (offset_hint >= 0),
    metadata_raw   text,              -- the Upload-Metadata header exactly as sent; NULL: none
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,  -- decoded and sanitised
    concat         text NOT NULL DEFAULT 'none' CHECK (concat IN ('none', 'partial', 'final')),
    partials       text[] NOT NULL DEFAULT '{}',
    part_size      bigint NOT NULL CHECK (part_size > 0),
    multipart_id   text,              -- S3 UploadId of the staged object
    status         text NOT NULL DEFAULT 'uploading'
                   CHECK (status IN ('uploading', 'completed', 'failed', 'expired')),
    error          text,
    sha256         text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    source_key     text,
    handed_off_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    CHECK (status <> 'completed' OR concat = 'partial' OR sha256 IS NOT NULL)
);
CREATE INDEX uploads_status_idx ON uploads (status, expires_at);
CREATE TRIGGER uploads_touch BEFORE UPDATE ON uploads
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- At most one pipeline start per source: whoever inserts the row starts it.
CREATE TABLE upload_dispatches (
    sha256        text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    video_id      text NOT NULL,
    source_key    text NOT NULL,
    origin        text NOT NULL,      -- "tus:{upload id}" or "s3:{bucket}/{key}"
    mode          text NOT NULL CHECK (mode IN ('event', 'inline', 'none')),
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz
);

-- S3 event notifications already taken in, so that a replay does nothing.
CREATE TABLE upload_hook_events (
    event_key   text PRIMARY KEY,
    bucket      text NOT NULL,
    key         text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = r"""
DROP TABLE IF EXISTS upload_hook_events, upload_dispatches, uploads;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
