"""The upload service on S3 (moto in server mode, over HTTP): multipart staging with
a tail object, bounded memory, the janitor, and the bucket-notification hook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import S3Server
from tests.uploads import (
    KillProxy,
    PausedPatch,
    UploadServer,
    V,
    client_argv,
    client_opts,
    http,
    prefect_events,
    random_file,
    run_client,
    run_killed,
    sha256_of,
    wait_until,
)
from vidpipe.infra.catalog import open_catalog, resolve_dsn
from vidpipe.infra.ingest import video_id_for
from vidpipe.infra.upload import dispatches

pytestmark = [pytest.mark.s3, pytest.mark.upload]

MIB = 1024 * 1024
SECRET = "hook-secret-0123456789abcdef"


class S3Upload:
    """A server staging uploads in the moto bucket, under a prefix of its own."""

    def __init__(self, s3: S3Server, data_dir: Path, **env: str) -> None:
        self.s3, self.client = s3, s3.client()
        self.prefix = f"t-{uuid.uuid4().hex[:8]}"
        self.server = UploadServer.start(data_dir, env={
            "VIDPIPE_STORAGE__KIND": "s3", "VIDPIPE_STORAGE__S3_BUCKET": s3.bucket,
            "VIDPIPE_STORAGE__S3_ENDPOINT_URL": s3.endpoint,
            "VIDPIPE_STORAGE__S3_PREFIX": self.prefix, "VIDPIPE_UPLOAD__STORE": "s3",
            "VIDPIPE_UPLOAD__HOOK_SECRET": SECRET,
        } | {f"VIDPIPE_UPLOAD__{k.upper()}": v for k, v in env.items()})  # fmt: skip

    def staged(self, url: str) -> str:
        return f"{self.prefix}/tus/{url.rsplit('/', 1)[1]}"

    def parts(self, url: str) -> list[int]:
        key = self.staged(url)
        ups = self.client.list_multipart_uploads(Bucket=self.s3.bucket, Prefix=key)
        (mp,) = [u for u in ups.get("Uploads", []) if u["Key"] == key]
        listed = self.client.list_parts(Bucket=self.s3.bucket, Key=key, UploadId=mp["UploadId"])
        return [int(p["Size"]) for p in listed.get("Parts", [])]

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.s3.bucket, Key=key)["ContentLength"])
        except self.client.exceptions.ClientError:
            return None

    def multipart_keys(self) -> set[str]:
        ups = self.client.list_multipart_uploads(Bucket=self.s3.bucket, Prefix=self.prefix)
        return {u["Key"] for u in ups.get("Uploads", [])}

    def source(self, sha: str) -> bytes:
        key = f"{self.prefix}/sources/{sha}"
        return bytes(self.client.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def s3up(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Upload]:
    up = S3Upload(s3_server, tmp_path_factory.mktemp("s3"), part_size_mb="5")
    yield up
    up.server.stop()


def _blocks(seed: int, total: int, block: int = MIB) -> Iterator[bytes]:
    rng = random.Random(seed)
    base = rng.randbytes(block)
    for i in range(0, total, block):
        yield (i.to_bytes(8, "big") + base[8:])[: min(block, total - i)]


# ---------------------------------------------------------------- multipart staging


def test_the_tail_below_a_part_is_kept_as_its_own_object(s3up: S3Upload) -> None:
    srv, data = s3up.server, os.urandom(13 * MIB)
    url = srv.create(len(data))
    tail = s3up.staged(url) + ".part"
    assert srv.patch(url, 0, data[: 3 * MIB]).status == 204
    assert (s3up.parts(url), s3up.size(tail)) == ([], 3 * MIB)
    assert srv.patch(url, 3 * MIB, data[3 * MIB : 9 * MIB]).status == 204
    assert (s3up.parts(url), s3up.size(tail)) == ([5 * MIB], 4 * MIB)
    assert srv.offset(url) == 9 * MIB
    assert srv.patch(url, 9 * MIB, data[9 * MIB :]).status == 204
    sha = hashlib.sha256(data).hexdigest()
    assert srv.status(url)["sha256"] == sha
    assert s3up.source(sha) == data
    assert s3up.size(tail) is None and s3up.size(s3up.staged(url)) is None
    assert s3up.size(s3up.staged(url)) is None


def test_a_disconnect_keeps_what_arrived(s3up: S3Upload) -> None:
    srv, data = s3up.server, os.urandom(8 * MIB)
    url = srv.create(len(data))
    cut = 7 * MIB + 333
    PausedPatch(srv, url, 0, data, first=cut).drop()
    wait_until(lambda: srv.offset(url) == cut, what="the received bytes to be kept")
    assert s3up.parts(url) == [5 * MIB]
    assert srv.patch(url, cut, data[cut:]).status == 204
    assert s3up.source(hashlib.sha256(data).hexdigest()) == data


def test_a_checksum_mismatch_leaves_parts_and_tail_alone(s3up: S3Upload) -> None:
    srv, data = s3up.server, os.urandom(12 * MIB)
    url = srv.create(len(data))
    srv.patch(url, 0, data[: 4 * MIB])
    wrong = "sha256 " + base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    assert srv.patch(url, 4 * MIB, data[4 * MIB : 11 * MIB], Upload_Checksum=wrong).status == 460
    assert srv.offset(url) == 4 * MIB
    assert (s3up.parts(url), s3up.size(s3up.staged(url) + ".part")) == ([], 4 * MIB)


@pytest.mark.slow
def test_200_mib_in_8_mib_patches_keeps_the_server_under_150_mib(
    s3_server: S3Server, tmp_path: Path
) -> None:
    up = S3Upload(s3_server, tmp_path / "big", dispatch="event")
    try:
        srv, total, patch = up.server, 200 * MIB, 8 * MIB
        digest = hashlib.sha256()
        url = srv.create(total)
        blocks = _blocks(7, total)
        for offset in range(0, total, patch):
            body = b"".join(next(blocks) for _ in range(patch // MIB))
            digest.update(body)
            reply = srv.patch(url, offset, body)
            assert reply.status == 204, reply
        status = srv.status(url)
        assert status["sha256"] == digest.hexdigest() and status["handed_off"]
        assert up.size(f"{up.prefix}/sources/{digest.hexdigest()}") == total
        assert not up.multipart_keys()
        peak = srv.peak_rss_mib()
        print(f"server peak RSS after 200 MiB through S3: {peak:.0f} MiB")
        assert peak < 150, f"peak RSS {peak:.0f} MiB"
    finally:
        up.server.stop()


@pytest.mark.slow
def test_killed_and_resumed_on_s3(s3up: S3Upload, tmp_path: Path) -> None:
    script = Path(__file__).parent / "tus" / "upload.mjs"
    if not (script.parent / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=script.parent,
                       check=True)  # fmt: skip
    srv = s3up.server
    rng = random.Random("s3-resume")
    proxy = KillProxy(("127.0.0.1", int(srv.base.rsplit(":", 1)[1])))
    try:
        for i in range(5):
            src = random_file(tmp_path / f"s{i}.bin", rng, rng.randrange(6 * MIB, 14 * MIB))
            opts = client_opts("tus-js-client", src, proxy.base + "/files/", chunkSize=3 * MIB,
                               urlStorage=str(tmp_path / f"s{i}.urls"))  # fmt: skip
            budget = rng.randrange(MIB, src.stat().st_size)
            assert run_killed(proxy, budget, client_argv("tus-js-client", script, opts)) == (
                -signal.SIGKILL
            )
            code, events = run_client(client_argv("tus-js-client", script, opts))
            assert code == 0, events
            assert any(e["event"] == "resume" for e in events)
            assert srv.wait_status(events[-1]["url"], "completed")["sha256"] == sha256_of(src)
            staged = s3up.staged(events[-1]["url"])
            assert staged not in s3up.multipart_keys() and s3up.size(staged) is None
    finally:
        proxy.close()


def test_the_janitor_aborts_stale_multipart_uploads(s3_server: S3Server, tmp_path: Path) -> None:
    up = S3Upload(s3_server, tmp_path / "janitor", part_size_mb="5", expiry_hours="0.0005",
                  janitor_interval_seconds="0.5")  # fmt: skip
    try:
        srv = up.server
        url = srv.create(20 * MIB)
        srv.patch(url, 0, os.urandom(7 * MIB))  # one part and a tail
        orphan = f"{up.prefix}/tus/{'f' * 32}"  # its creator died before recording it
        up.client.create_multipart_upload(Bucket=up.s3.bucket, Key=orphan)
        wait_until(lambda: not up.multipart_keys(), timeout=60,
                   what="the janitor to abort both multipart uploads")  # fmt: skip
        assert up.size(up.staged(url) + ".part") is None
        assert srv.call("HEAD", url, V).status == 410
    finally:
        up.server.stop()


# ---------------------------------------------------------------- the bucket hook


def _notification(bucket: str, key: str, etag: str, flavour: str = "minio") -> bytes:
    quoted = key.replace(" ", "+")
    record: dict[str, Any] = {
        "eventVersion": "2.0" if flavour == "minio" else "2.1",
        "eventSource": "minio:s3" if flavour == "minio" else "aws:s3",
        "eventTime": "2026-12-01T10:00:00.000Z",
        "eventName": "s3:ObjectCreated:Put" if flavour == "minio" else "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0", "configurationId": "vidpipe",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quoted, "size": 1, "eTag": etag,
                       "sequencer": uuid.uuid4().hex[:16].upper()},
        },
    }  # fmt: skip
    doc: dict[str, Any] = {"Records": [record]}
    if flavour == "minio":
        doc = {"EventName": record["eventName"], "Key": f"{bucket}/{key}"} | doc
    return json.dumps(doc).encode()


def _put(up: S3Upload, key: str, data: bytes) -> str:
    out = up.client.put_object(Bucket=up.s3.bucket, Key=key, Body=data, ContentType="video/mp4")
    return str(out["ETag"]).strip('"')


def _hook(up: S3Upload, body: bytes, headers: dict[str, str]) -> Any:
    return http("POST", f"{up.server.base}/hooks/s3", {"Content-Type": "application/json"}
                | headers, body)  # fmt: skip


def _signed(body: bytes) -> dict[str, str]:
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Vidpipe-Signature": f"sha256={mac}"}


@pytest.fixture(scope="module")
def hooked(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory, prefect_server: str
) -> Iterator[S3Upload]:
    up = S3Upload(s3_server, tmp_path_factory.mktemp("hook"), dispatch="event")
    yield up
    up.server.stop()


def test_an_s3_notification_starts_the_same_intake(hooked: S3Upload, prefect_server: str) -> None:
    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    key = f"uploads/{uuid.uuid4().hex[:6]} my clip.mp4"
    body = _notification(hooked.s3.bucket, key, _put(hooked, key, data))
    reply = _hook(hooked, body, {"Authorization": f"Bearer {SECRET}"})
    assert reply.status == 200 and reply.json()["accepted"] == 1, reply
    assert hooked.source(sha) == data
    with open_catalog(None, hooked.server.data_dir) as catalog:
        video = catalog.get_video(video_id_for(sha))
    assert video is not None and video.status == "uploaded"
    wait_until(lambda: bool(prefect_events(prefect_server, sha)), what="the event in Prefect")
    (event,) = prefect_events(prefect_server, sha)
    source_key = f"{hooked.prefix}/sources/{sha}"
    assert event["payload"]["source_uri"] == f"s3://{hooked.s3.bucket}/{source_key}"
    # The same notification again: nothing new.
    again = _hook(hooked, body, {"Authorization": f"Bearer {SECRET}"})
    assert again.status == 200 and again.json() == {"accepted": 0, "replayed": 1, "ignored": 0}
    assert dispatches.count(resolve_dsn(None, hooked.server.data_dir), sha) == 1


def test_an_unsigned_notification_does_nothing(hooked: S3Upload) -> None:
    data = os.urandom(5000)
    key = f"uploads/{uuid.uuid4().hex}.mp4"
    body = _notification(hooked.s3.bucket, key, _put(hooked, key, data))
    assert _hook(hooked, body, {}).status == 401
    assert _hook(hooked, body, {"Authorization": "Bearer not-the-secret"}).status == 401
    forged = _signed(body.replace(b"uploads/", b"uploads/x"))
    assert _hook(hooked, body, forged).status == 401
    sha = hashlib.sha256(data).hexdigest()
    assert hooked.size(f"{hooked.prefix}/sources/{sha}") is None
    with open_catalog(None, hooked.server.data_dir) as catalog:
        assert catalog.find_by_sha256(sha) is None


def test_a_signed_aws_notification_and_the_prefix_rule(hooked: S3Upload) -> None:
    data = os.urandom(7000)
    key = f"uploads/{uuid.uuid4().hex}.mov"
    body = _notification(hooked.s3.bucket, key, _put(hooked, key, data), flavour="aws")
    assert _hook(hooked, body, _signed(body)).json()["accepted"] == 1
    assert hooked.source(hashlib.sha256(data).hexdigest()) == data
    outside = f"elsewhere/{uuid.uuid4().hex}.mov"
    other = _notification(hooked.s3.bucket, outside, _put(hooked, outside, b"x" * 10), "aws")
    assert _hook(hooked, other, _signed(other)).json()["ignored"] == 1
    assert hooked.size(f"{hooked.prefix}/sources/{hashlib.sha256(b'x' * 10).hexdigest()}") is None
