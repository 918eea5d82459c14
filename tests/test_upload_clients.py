"""Real tus clients that nobody here wrote, against ``vidpipe serve``.

tuspy (Python, a sha1 Upload-Checksum on every PATCH, tinydb URL storage)
and tus-js-client (Node, FileUrlStorage) upload whole files, get killed with
SIGKILL at a random byte of the wire (seeded) and resume in a new process,
meet each error the protocol defines, and, for tus-js-client, upload in three
parallel parts that the server concatenates. Then: many PATCHes at once on
one upload, the Prefect event a completed upload emits (once per source),
the janitor re-driving a hand-off that failed, and an upload that ends as a
published video.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import MEDIA_ONLY, Media, free_port
from tests.uploads import (
    OCTETS,
    TUS_JS,
    KillProxy,
    PausedPatch,
    UploadServer,
    V,
    client_argv,
    client_opts,
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

pytestmark = pytest.mark.upload
MIB = 1024 * 1024
ROUNDS = 20
MAX_MB = 64


@pytest.fixture(scope="module")
def tus_js() -> Path:
    if not (TUS_JS / "node_modules" / "tus-js-client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=TUS_JS,
                       check=True)  # fmt: skip
    return TUS_JS / "upload.mjs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadServer]:
    srv = UploadServer.start(
        tmp_path_factory.mktemp("clients"), env={"VIDPIPE_UPLOAD__MAX_SIZE_MB": str(MAX_MB)}
    )
    yield srv
    srv.stop()


CLIENTS = ["tuspy", "tus-js-client"]


def _go(
    kind: str, tus_js: Path, where: tuple[Path, str | None], **extra: Any
) -> tuple[int, list[dict[str, Any]]]:
    file, endpoint = where
    return run_client(client_argv(kind, tus_js, client_opts(kind, file, endpoint, **extra)))


# ---------------------------------------------------------------- full uploads


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_full_upload(server: UploadServer, tus_js: Path, tmp_path: Path, kind: str) -> None:
    src = random_file(tmp_path / "clip.bin", random.Random(1), 3 * MIB + 17)
    meta = {"filename": "clip.bin", "filetype": "video/mp4", "sha256": sha256_of(src)}
    code, events = _go(kind, tus_js, (src, server.files), metadata=meta)
    assert code == 0, events
    status = server.wait_status(events[-1]["url"], "completed")
    assert status["sha256"] == sha256_of(src) and status["metadata"]["filename"] == "clip.bin"
    assert sha256_of(server.data_dir / "sources" / sha256_of(src)) == sha256_of(src)


@pytest.mark.slow
@pytest.mark.parametrize("kind", CLIENTS)
def test_killed_at_a_random_byte_and_resumed_in_a_new_process(
    server: UploadServer, tus_js: Path, tmp_path: Path, kind: str
) -> None:
    rng = random.Random(f"resume-{kind}")
    proxy = KillProxy(("127.0.0.1", int(server.base.rsplit(":", 1)[1])))
    resumed = 0
    try:
        for i in range(ROUNDS):
            src = random_file(tmp_path / f"r{i}.bin", rng, rng.randrange(MIB, 3 * MIB))
            store = tmp_path / f"r{i}.urls"
            opts = client_opts(kind, src, proxy.base + "/files/", storage=str(store),
                         urlStorage=str(store))  # fmt: skip
            budget = rng.randrange(1, src.stat().st_size)
            killed = run_killed(proxy, budget, client_argv(kind, tus_js, opts))
            assert killed == -signal.SIGKILL, f"round {i}: the client was not killed"
            code, events = run_client(client_argv(kind, tus_js, opts))
            assert code == 0, f"round {i} (cut at byte {budget}): {events}"
            resumed += any(e["event"] == "resume" for e in events)
            status = server.wait_status(events[-1]["url"], "completed")
            assert status["sha256"] == sha256_of(src), f"round {i} (cut at byte {budget})"
    finally:
        proxy.close()
    # Most cuts fall after the upload was created, so the new process resumes it.
    assert resumed >= ROUNDS // 2, resumed


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_checksum_mismatch_is_460(
    server: UploadServer, tus_js: Path, tmp_path: Path, kind: str
) -> None:
    src = random_file(tmp_path / "c.bin", random.Random(2), MIB)
    extra: dict[str, Any] = {"bad_checksum": True, "retries": 0} if kind == "tuspy" else {
        "badChecksum": True, "retryDelays": None}  # fmt: skip
    code, events = _go(kind, tus_js, (src, server.files), **extra)
    assert code == 1 and events[-1]["status"] == 460, events


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_wrong_offset_is_409(
    server: UploadServer, tus_js: Path, tmp_path: Path, kind: str
) -> None:
    src = random_file(tmp_path / "o.bin", random.Random(3), MIB)
    extra: dict[str, Any] = {"bad_offset": True, "retries": 0} if kind == "tuspy" else {
        "badOffset": True, "retryDelays": None}  # fmt: skip
    code, events = _go(kind, tus_js, (src, server.files), **extra)
    assert code == 1 and events[-1]["status"] == 409, events


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_expired_upload_is_410(
    server: UploadServer, tus_js: Path, tmp_path: Path, kind: str
) -> None:
    src = random_file(tmp_path / "e.bin", random.Random(4), 2 * MIB)
    url = server.create(src.stat().st_size)
    server.patch(url, 0, src.read_bytes()[:MIB])
    with psycopg.connect(resolve_dsn(None, server.data_dir), autocommit=True) as conn:
        conn.execute("UPDATE vidpipe.uploads SET expires_at = now() - interval '1 minute' "
                     "WHERE id = %s", (url.rsplit("/", 1)[1],))  # fmt: skip
    if kind == "tuspy":
        opts = client_opts(kind, src, server.files, url=url, retries=0)
    else:  # no endpoint: tus-js-client reports the 410 instead of starting afresh
        opts = client_opts(kind, src, None, uploadUrl=url, retryDelays=None)
    code, events = run_client(client_argv(kind, tus_js, opts))
    assert code == 1 and events[-1]["status"] == 410, events


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_upload_over_the_maximum_size_is_413(
    server: UploadServer, tus_js: Path, tmp_path: Path, kind: str
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        fh.truncate(MAX_MB * MIB + 1)  # sparse: nothing is read before the server says no
    extra: dict[str, Any] = {"retries": 0} if kind == "tuspy" else {"retryDelays": None}
    code, events = _go(kind, tus_js, (big, server.files), **extra)
    assert code == 1 and events[-1]["status"] == 413, events


# ---------------------------------------------------------------- concatenation


def test_tus_js_client_parallel_uploads_are_concatenated(
    server: UploadServer, tus_js: Path, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "p.bin", random.Random(5), 5 * MIB + 3)
    opts = client_opts("tus-js-client", src, server.files, parallelUploads=3, chunkSize=MIB,
                 metadata={"filename": "p.bin", "sha256": sha256_of(src)})  # fmt: skip
    code, events = run_client(client_argv("tus-js-client", tus_js, opts))
    assert code == 0, events
    head = server.call("HEAD", events[-1]["url"], V)
    partials = (head.header("upload-concat") or "").removeprefix("final;").split()
    assert len(partials) == 3
    assert head.header("upload-offset") == head.header("upload-length") == str(5 * MIB + 3)
    assert server.status(events[-1]["url"])["sha256"] == sha256_of(src)


# ---------------------------------------------------------------- concurrency


def _slow(body: bytes, piece: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(body), piece):
        time.sleep(0.002)
        yield body[i : i + piece]


def test_concurrent_patches_never_corrupt_an_upload(server: UploadServer) -> None:
    chunk, length = 256 * 1024, 3 * MIB
    url = server.create(length)
    # Another upload stays locked the whole time: nothing else waits on it.
    held = server.create(2 * MIB)
    stalled = PausedPatch(server, held, 0, os.urandom(2 * MIB), first=MIB + 1)
    wait_until(lambda: server.offset(held) >= MIB, what="the stalled PATCH to hold its lock")
    accepted: list[tuple[int, bytes]] = []
    seen: list[int] = []

    def writer(tag: int) -> None:
        while (offset := server.offset(url)) < length:
            body = bytes([tag]) * min(chunk, length - offset)
            reply = server.call("PATCH", url, OCTETS | {"Upload-Offset": str(offset),
                                "Content-Length": str(len(body))}, _slow(body))  # fmt: skip
            seen.append(reply.status)
            if reply.status == 204:
                accepted.append((offset, body))
            else:
                assert reply.status in (409, 423), reply

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert stalled.finish().status == 204
    assert 423 in seen, "the writers never overlapped; the test proved nothing"
    offsets = [o for o, _ in accepted]
    assert len(offsets) == len(set(offsets))  # no offset was written twice
    whole = b"".join(body for _, body in sorted(accepted))
    assert len(whole) == length
    assert server.wait_status(url, "completed")["sha256"] == hashlib.sha256(whole).hexdigest()


# ---------------------------------------------------------------- hand-off to Prefect


def test_a_completed_upload_emits_one_event_per_source(
    prefect_server: str, tus_js: Path, tmp_path: Path
) -> None:
    srv = UploadServer.start(tmp_path / "events", env={"VIDPIPE_UPLOAD__DISPATCH": "event"})
    try:
        src = random_file(tmp_path / "ev.bin", random.Random(6), MIB)
        sha = sha256_of(src)
        urls = []
        for _ in range(2):  # the same bytes twice, as two uploads
            code, events = _go("tus-js-client", tus_js, (src, srv.files))
            assert code == 0, events
            urls.append(events[-1]["url"])
            wait_until(lambda: srv.status(urls[-1])["handed_off"], what="the hand-off")
        wait_until(lambda: bool(prefect_events(prefect_server, sha)), what="the event in Prefect")
        time.sleep(2)  # a second event, had one been sent, is stored by now
        found = prefect_events(prefect_server, sha)
        assert len(found) == 1
        payload = found[0]["payload"]
        assert payload["sha256"] == sha
        assert payload["source_uri"] == (srv.data_dir / "sources" / sha).resolve().as_uri()
        assert dispatches.count(resolve_dsn(None, srv.data_dir), sha) == 1
        with open_catalog(None, srv.data_dir) as catalog:
            video = catalog.get_video(video_id_for(sha))
        assert video is not None and video.status == "uploaded"
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_failed_hand_off_is_retried_by_the_janitor(prefect_server: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "retry"
    env = {"VIDPIPE_UPLOAD__DISPATCH": "event", "VIDPIPE_UPLOAD__JANITOR_INTERVAL_SECONDS": "0.5"}
    down = UploadServer.start(data_dir, env=env | {
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})  # fmt: skip
    data = os.urandom(4096)
    sha = hashlib.sha256(data).hexdigest()
    try:
        url = down.create(len(data))
        assert down.patch(url, 0, data).status == 204  # the bytes are safe either way
        status = down.status(url)
        assert status["status"] == "completed" and not status["handed_off"]
    finally:
        down.stop()
    up = UploadServer.start(data_dir, env=env)
    try:
        here = up.files + url.rsplit("/", 1)[1]
        wait_until(lambda: up.status(here)["handed_off"], what="the janitor's hand-off")
        # The server stores events in batches; on a loaded machine that takes a while.
        wait_until(lambda: bool(prefect_events(prefect_server, sha)), 120, what="the event")
        time.sleep(2)  # a second hand-off, were there one, would land by now
        assert len(prefect_events(prefect_server, sha)) == 1, "handed off once, announced once"
    finally:
        up.stop()


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_an_upload_through_tus_ends_as_a_published_video(
    media: Media, tus_js: Path, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(media.video_only, clip)
    srv = UploadServer.start(tmp_path / "e2e", env=MEDIA_ONLY | {
        "VIDPIPE_UPLOAD__DISPATCH": "inline"})  # fmt: skip
    try:
        opts = client_opts("tus-js-client", clip, srv.files, metadata={"filename": "clip.mp4",
                     "filetype": "video/mp4", "sha256": sha256_of(clip)})  # fmt: skip
        code, events = run_client(client_argv("tus-js-client", tus_js, opts))
        assert code == 0, events
        video_id = video_id_for(sha256_of(clip))

        def published() -> bool:
            with open_catalog(None, srv.data_dir) as catalog:
                video = catalog.get_video(video_id)
            assert video is None or video.status not in ("failed", "rejected"), (
                video,
                srv.log_text()[-3000:],
            )
            return video is not None and video.status == "published"

        wait_until(published, timeout=300, what="the video to be published")
        assert (srv.data_dir / "videos" / video_id / "master.m3u8").is_file()
    finally:
        srv.stop()
