"""`vidpipe process --out s3://...` against moto in server mode, over HTTP, through boto3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BUNNY, Published, S3Server, run_cli
from tests.test_process import check_published

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def objects(s3: S3Server, prefix: str) -> dict[str, tuple[str, int]]:
    out = {}
    for page in (
        s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    ):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = (obj["ETag"], obj["Size"])
    return out


def download(s3: S3Server, prefix: str, dest: Path) -> None:
    client = s3.client()
    for key in objects(s3, prefix):
        target = dest / key[len(prefix) :].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(s3.bucket, key, str(target))


def test_process_to_s3_and_rerun(s3_server: S3Server, tmp_path: Path) -> None:
    env = {"VIDPIPE_STORAGE__S3_ENDPOINT_URL": s3_server.endpoint}
    out = f"s3://{s3_server.bucket}/tenant-a"
    run = run_cli(
        "process", str(BUNNY), "--out", out, "--data-dir", str(tmp_path / "state"), env=env
    )
    assert run.returncode == 0, run.stderr
    assert f"{out}/videos/" in run.stdout
    stored = objects(s3_server, "tenant-a/")
    masters = [k for k in stored if k.endswith("/master.m3u8") and k.count("/") == 3]
    assert len(masters) == 1
    video_id = masters[0].split("/")[2]
    assert f"tenant-a/videos/{video_id}/manifest.json" in stored
    assert any(k.startswith("tenant-a/sources/") for k in stored)  # the original is kept
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=masters[0])
    assert head["ContentType"] == "application/vnd.apple.mpegurl"

    # What landed in the bucket is a whole, valid ladder.
    local = tmp_path / "mirror"
    download(s3_server, "tenant-a", local)
    check_published(Published(local, video_id))

    # Same file, same options: nothing is written again.
    again = run_cli(
        "process", str(BUNNY), "--out", out, "--data-dir", str(tmp_path / "state"), env=env
    )
    assert again.returncode == 0, again.stderr
    assert "nothing new" in again.stdout
    assert objects(s3_server, "tenant-a/") == stored


def test_missing_bucket_is_a_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    run = run_cli(
        "process",
        str(BUNNY),
        "--out",
        "s3://no-such-bucket/x",
        "--data-dir",
        str(tmp_path),
        env={"VIDPIPE_STORAGE__S3_ENDPOINT_URL": s3_server.endpoint},
    )
    assert run.returncode == 2, run.stderr
    assert "NoSuchBucket" in run.stderr and "storage.s3_bucket" in run.stderr
