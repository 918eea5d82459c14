"""tus 1.0.0 as ``vidpipe serve`` speaks it: one rule per test, bytes on a real wire.

The server is the real command in its own process (local store, embedded
PostgreSQL, dispatch "none": completion registers the video and stops).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import psycopg
import pytest

from tests.conftest import run_cli
from tests.uploads import (
    OCTETS,
    TOKEN,
    PausedPatch,
    UploadServer,
    V,
    http,
    metadata,
    wait_until,
)
from vidpipe.infra.catalog import open_catalog, resolve_dsn
from vidpipe.infra.ingest import video_id_for

pytestmark = pytest.mark.upload
MIB = 1024 * 1024
EXTENSIONS = {
    "creation", "creation-with-upload", "creation-defer-length", "expiration", "checksum",
    "termination", "concatenation",
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadServer]:
    srv = UploadServer.start(
        tmp_path_factory.mktemp("tus"), env={"VIDPIPE_UPLOAD__MAX_SIZE_MB": "64"}
    )
    yield srv
    srv.stop()


def _sql(server: UploadServer, statement: str, *params: object) -> None:
    with psycopg.connect(resolve_dsn(None, server.data_dir), autocommit=True) as conn:
        conn.execute(statement, params)


def _upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _digest(algorithm: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


# ---------------------------------------------------------------- version


def test_every_response_but_options_says_tus_resumable(server: UploadServer) -> None:
    url = server.create(3)
    replies = {
        "POST": server.call("POST", server.files, V | {"Upload-Length": "1"}),
        "HEAD": server.call("HEAD", url, V),
        "PATCH": server.patch(url, 0, b"abc"),
        "404": server.call("HEAD", server.files + "0" * 32, V),
        "412": server.call("HEAD", url),
        "415": server.call("PATCH", url, V | {"Upload-Offset": "0"}, b"x"),
        "DELETE": server.call("DELETE", server.create(1), V),
        "GET": server.call("GET", url),
    }
    assert {k: r.header("tus-resumable") for k, r in replies.items()} == dict.fromkeys(
        replies, "1.0.0"
    )
    assert server.call("OPTIONS", server.files).header("tus-resumable") is None


def test_missing_version_is_412_and_the_body_is_not_processed(server: UploadServer) -> None:
    url = server.create(4)
    reply = server.call("PATCH", url, {"Content-Type": OCTETS["Content-Type"],
                                       "Upload-Offset": "0"}, b"abcd")  # fmt: skip
    assert reply.status == 412 and reply.header("tus-version") == "1.0.0"
    assert server.offset(url) == 0


def test_unsupported_version_is_412_and_the_body_is_not_processed(server: UploadServer) -> None:
    url = server.create(4)
    reply = server.patch(url, 0, b"abcd", Tus_Resumable="0.2.2")
    assert reply.status == 412
    assert server.offset(url) == 0
    assert server.call("POST", server.files, {"Tus-Resumable": "2.0.0",
                                              "Upload-Length": "1"}).status == 412  # fmt: skip


# ---------------------------------------------------------------- OPTIONS


def test_options_announces_version_extensions_size_and_checksums(server: UploadServer) -> None:
    reply = server.call("OPTIONS", server.files)
    assert reply.status == 204
    assert reply.header("tus-version") == "1.0.0"
    assert set((reply.header("tus-extension") or "").split(",")) == EXTENSIONS
    assert reply.header("tus-max-size") == str(64 * MIB)
    assert set((reply.header("tus-checksum-algorithm") or "").split(",")) == {
        "sha1", "sha256", "md5"
    }  # fmt: skip


# ---------------------------------------------------------------- POST


def test_post_needs_a_length_or_a_deferred_length(server: UploadServer) -> None:
    assert server.call("POST", server.files, V).status == 400
    both = V | {"Upload-Length": "5", "Upload-Defer-Length": "1"}
    assert server.call("POST", server.files, both).status == 400
    assert server.call("POST", server.files, V | {"Upload-Defer-Length": "2"}).status == 400
    assert server.call("POST", server.files, V | {"Upload-Length": "-5"}).status == 400
    assert server.call("POST", server.files, V | {"Upload-Defer-Length": "1"}).status == 201


def test_post_over_the_maximum_size_is_413(server: UploadServer) -> None:
    reply = server.call("POST", server.files, V | {"Upload-Length": str(64 * MIB + 1)})
    assert reply.status == 413
    assert server.call("POST", server.files, V | {"Upload-Length": str(64 * MIB)}).status == 201


def test_post_answers_201_with_location_and_expiry(server: UploadServer) -> None:
    reply = server.call("POST", server.files, V | {"Upload-Length": "10"})
    assert reply.status == 201
    location = reply.header("location") or ""
    assert location.startswith(server.files) and len(_upload_id(location)) == 32
    expires = parsedate_to_datetime(reply.header("upload-expires") or "")
    assert expires > datetime.now(UTC)
    assert reply.header("upload-offset") is None  # no body, no offset


def test_post_with_a_body_answers_the_offset(server: UploadServer) -> None:
    headers = OCTETS | {"Upload-Length": "10"}
    reply = server.call("POST", server.files, headers, b"012345")
    assert reply.status == 201 and reply.header("upload-offset") == "6"
    assert server.offset(reply.header("location") or "") == 6


def test_deferred_length_is_declared_by_a_later_patch(server: UploadServer) -> None:
    url = server.create(None)
    head = server.call("HEAD", url, V)
    assert head.header("upload-defer-length") == "1" and head.header("upload-length") is None
    assert server.patch(url, 0, b"abc").header("upload-offset") == "3"
    done = server.patch(url, 3, b"de", Upload_Length="5")
    assert done.status == 204 and done.header("upload-offset") == "5"
    assert server.call("HEAD", url, V).header("upload-length") == "5"
    assert server.status(url)["status"] == "completed"


# ---------------------------------------------------------------- HEAD


def test_head_answers_offset_length_metadata_as_sent_and_no_store(server: UploadServer) -> None:
    sent = f"filename {metadata(x='clip.mp4').split(' ')[1]},is_private, filetype dmlkZW8vbXA0"
    url = server.create(8, sent)
    server.patch(url, 0, b"1234")
    head = server.call("HEAD", url, V)
    assert head.status == 200
    assert head.header("upload-offset") == "4" and head.header("upload-length") == "8"
    assert head.header("upload-metadata") == sent
    assert head.header("cache-control") == "no-store"


def test_head_works_with_empty_metadata(server: UploadServer) -> None:
    for sent in ("", None):
        url = server.create(2, sent)
        head = server.call("HEAD", url, V)
        assert head.status == 200 and head.header("upload-offset") == "0"
        assert head.header("upload-metadata") == sent


def test_metadata_is_checked_and_sanitised(server: UploadServer) -> None:
    evil = "../../etc/\x00pass\u202ewd\nname.mp4"
    url = server.create(1, metadata(filename=evil, note="a\x07b", sha256="ab" * 32))
    assert server.status(url)["metadata"] == {
        "filename": "passwdname.mp4", "note": "ab", "sha256": "ab" * 32
    }  # fmt: skip
    for bad in ("filename !!!notbase64", "bad key dGVzdA==", "a YQ==,a YQ==", "sha256 eHl6"):
        assert (
            server.call(
                "POST", server.files, V | {"Upload-Length": "1", "Upload-Metadata": bad}
            ).status
            == 400
        )


# ---------------------------------------------------------------- PATCH


def test_patch_with_the_wrong_content_type_is_415(server: UploadServer) -> None:
    url = server.create(3)
    reply = server.call(
        "PATCH", url, V | {"Upload-Offset": "0", "Content-Type": "application/json"}, b"abc"
    )
    assert reply.status == 415
    assert server.offset(url) == 0


def test_patch_at_the_wrong_offset_is_409_and_changes_nothing(server: UploadServer) -> None:
    url = server.create(6)
    server.patch(url, 0, b"abc")
    assert server.patch(url, 2, b"XYZ").status == 409
    assert server.patch(url, 4, b"XY").status == 409
    assert server.offset(url) == 3
    assert server.patch(url, 3, b"def").status == 204
    sha = hashlib.sha256(b"abcdef").hexdigest()
    assert server.wait_status(url, "completed")["sha256"] == sha


def test_patch_past_the_declared_length_is_413(server: UploadServer) -> None:
    url = server.create(4)
    assert server.patch(url, 0, b"abcde").status == 413
    chunked = server.call("PATCH", url, OCTETS | {"Upload-Offset": "0"}, iter([b"abc", b"de"]))
    assert chunked.status == 413
    assert server.offset(url) == 0


def test_patch_to_an_expired_upload_is_410(server: UploadServer) -> None:
    url = server.create(4)
    server.patch(url, 0, b"ab")
    _sql(server, "UPDATE vidpipe.uploads SET expires_at = now() - interval '1 second' "
         "WHERE id = %s", _upload_id(url))  # fmt: skip
    assert server.patch(url, 2, b"cd").status == 410
    assert server.call("HEAD", url, V).status == 410


def test_patch_answers_204_with_the_new_offset(server: UploadServer) -> None:
    url = server.create(10)
    first = server.patch(url, 0, b"01234")
    assert first.status == 204 and first.header("upload-offset") == "5"
    assert parsedate_to_datetime(first.header("upload-expires") or "") > datetime.now(UTC)
    assert server.patch(url, 5, b"56789").header("upload-offset") == "10"


def test_bytes_received_before_a_disconnect_are_kept(server: UploadServer) -> None:
    data = os.urandom(3 * MIB)
    url = server.create(len(data))
    cut = 2 * MIB + 12345
    PausedPatch(server, url, 0, data, first=cut).drop()
    wait_until(lambda: server.offset(url) == cut, what="the cut-off bytes to be kept")
    assert server.patch(url, cut, data[cut:]).status == 204
    assert server.wait_status(url, "completed")["sha256"] == hashlib.sha256(data).hexdigest()


def test_bodies_are_streamed_to_storage_not_held_in_memory(server: UploadServer) -> None:
    data = os.urandom(6 * MIB)
    url = server.create(len(data))
    patch = PausedPatch(server, url, 0, data, first=4 * MIB)
    staged = server.data_dir / "uploads" / _upload_id(url)
    # Most of the body is in the file while the request is still open.
    wait_until(lambda: staged.stat().st_size >= 3 * MIB, what="bytes to reach the disk")
    assert patch.finish().header("upload-offset") == str(len(data))


def test_a_locked_upload_answers_423_at_once(server: UploadServer) -> None:
    data = os.urandom(2 * MIB)
    url = server.create(len(data))
    slow = PausedPatch(server, url, 0, data, first=MIB + 1)
    wait_until(lambda: server.offset(url) >= MIB, what="the first PATCH to hold the lock")
    # Answered while the first PATCH is stalled mid-body, so nothing waited on it.
    assert server.patch(url, 0, b"x").status == 423
    assert server.call("OPTIONS", server.files).status == 204
    assert server.call("HEAD", server.create(1), V).status == 200
    assert slow.finish().status == 204
    assert server.wait_status(url, "completed")["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_lock_holds_across_processes(server: UploadServer) -> None:
    other = UploadServer.start(server.data_dir)  # same database, same staging directory
    try:
        data = os.urandom(2 * MIB)
        url = server.create(len(data))
        slow = PausedPatch(server, url, 0, data, first=MIB + 1)
        wait_until(lambda: server.offset(url) >= MIB, what="the first PATCH to hold the lock")
        there = other.files + _upload_id(url)
        assert other.patch(there, 0, b"x").status == 423
        assert other.call("DELETE", there, V).status == 423
        assert slow.finish().status == 204
        assert other.offset(there) == len(data)
    finally:
        other.stop()


# ---------------------------------------------------------------- checksum


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
def test_a_matching_checksum_is_accepted(server: UploadServer, algorithm: str) -> None:
    url = server.create(6)
    reply = server.patch(url, 0, b"abcdef", Upload_Checksum=f"{algorithm} "
                         f"{_digest(algorithm, b'abcdef')}")  # fmt: skip
    assert reply.status == 204 and reply.header("upload-offset") == "6"


def test_an_unknown_checksum_algorithm_is_400_and_discarded(server: UploadServer) -> None:
    url = server.create(6)
    server.patch(url, 0, b"abc")
    crc = base64.b64encode(b"\0\0\0\0").decode()
    assert server.patch(url, 3, b"def", Upload_Checksum=f"crc32 {crc}").status == 400
    assert server.offset(url) == 3


def test_a_checksum_mismatch_is_460_and_discarded(server: UploadServer) -> None:
    url = server.create(6)
    server.patch(url, 0, b"abc")
    wrong = _digest("sha1", b"something else")
    assert server.patch(url, 3, b"def", Upload_Checksum=f"sha1 {wrong}").status == 460
    assert server.offset(url) == 3
    assert (server.data_dir / "uploads" / _upload_id(url)).read_bytes() == b"abc"
    good = _digest("sha1", b"def")
    assert server.patch(url, 3, b"def", Upload_Checksum=f"sha1 {good}").status == 204


# ---------------------------------------------------------------- DELETE


def test_delete_is_204_and_then_the_upload_is_gone(server: UploadServer) -> None:
    url = server.create(6)
    server.patch(url, 0, b"abc")
    assert server.call("DELETE", url, V).status == 204
    assert server.call("HEAD", url, V).status in (404, 410)
    assert server.patch(url, 3, b"def").status in (404, 410)
    assert not (server.data_dir / "uploads" / _upload_id(url)).exists()


# ---------------------------------------------------------------- concatenation


def test_a_final_upload_is_the_sum_of_its_partials(server: UploadServer) -> None:
    pieces = [os.urandom(n) for n in (1000, 1, 70000)]
    urls = []
    for piece in pieces:
        url = server.create(len(piece), Upload_Concat="partial")
        assert server.patch(url, 0, piece).status == 204
        assert server.call("HEAD", url, V).header("upload-concat") == "partial"
        urls.append(url)
    final = server.call("POST", server.files, V | {"Upload-Concat": "final;" + " ".join(urls)})
    assert final.status == 201
    location = final.header("location") or ""
    head = server.call("HEAD", location, V)
    whole = b"".join(pieces)
    assert head.header("upload-length") == str(len(whole))
    assert head.header("upload-offset") == str(len(whole))
    assert (head.header("upload-concat") or "").startswith("final;/files/")
    assert server.status(location)["sha256"] == hashlib.sha256(whole).hexdigest()


def test_a_patch_to_a_final_upload_is_403(server: UploadServer) -> None:
    part = server.create(2, Upload_Concat="partial")
    server.patch(part, 0, b"ab")
    final = server.call("POST", server.files, V | {"Upload-Concat": f"final;{part}"})
    assert server.patch(final.header("location") or "", 2, b"c").status == 403


def test_a_final_upload_needs_finished_partials(server: UploadServer) -> None:
    part = server.create(4, Upload_Concat="partial")
    server.patch(part, 0, b"ab")
    assert server.call("POST", server.files, V | {"Upload-Concat": f"final;{part}"}).status == 400
    plain = server.create(1)
    server.patch(plain, 0, b"a")
    assert server.call("POST", server.files, V | {"Upload-Concat": f"final;{plain}"}).status == 400


# ---------------------------------------------------------------- CORS


def test_cors_exposes_the_tus_headers(server: UploadServer) -> None:
    url = server.create(4)
    reply = server.call("HEAD", url, V | {"Origin": "https://app.example"})
    exposed = {h.strip().lower() for h in (reply.header("access-control-expose-headers") or "")
               .split(",")}  # fmt: skip
    want = {"location", "upload-offset", "upload-length", "upload-metadata", "upload-expires",
            "upload-concat", "tus-resumable", "tus-version", "tus-extension", "tus-max-size",
            "tus-checksum-algorithm"}  # fmt: skip
    assert want <= exposed
    assert reply.header("access-control-allow-origin") == "*"


def test_cors_preflight_allows_the_tus_request_headers(server: UploadServer) -> None:
    reply = server.call("OPTIONS", server.files + "0" * 32, {
        "Origin": "https://app.example", "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,content-type,tus-resumable,"
        "upload-offset,upload-checksum",
    })  # fmt: skip
    assert reply.status == 200
    assert "PATCH" in (reply.header("access-control-allow-methods") or "")
    allowed = (reply.header("access-control-allow-headers") or "").lower()
    assert all(h in allowed for h in ("authorization", "upload-offset", "upload-checksum"))


# ---------------------------------------------------------------- auth


def test_a_token_is_required_when_configured(tmp_path: Path) -> None:
    srv = UploadServer.start(tmp_path / "auth", token=TOKEN)
    try:
        create = V | {"Upload-Length": "1"}
        anonymous = http("POST", srv.files, create)
        assert anonymous.status == 401 and anonymous.header("www-authenticate")
        assert http("POST", srv.files, create | {"Authorization": "Bearer wrong"}).status == 401
        url = srv.create(1)  # with the token
        assert http("HEAD", url, V).status == 401
        assert srv.call("HEAD", url, V).status == 200
        assert http("OPTIONS", srv.files).status == 204  # discovery and CORS preflight
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--host", "0.0.0.0"], {}, "without a token"),
        (["--host", "::"], {}, "without a token"),
        ([], {"VIDPIPE_UPLOAD__TOKEN": "short"}, "upload.token"),
        ([], {"VIDPIPE_UPLOAD__STORE": "s3"}, "storage.kind"),
        ([], {"VIDPIPE_UPLOAD__DISPATCH": "sometimes"}, "upload.dispatch"),
    ],
)
def test_bad_serve_config_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    run = run_cli("serve", "--port", "0", "--data-dir", str(tmp_path), *args, env=env,
                  timeout=60)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: ") and says in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_file_name_is_only_metadata(server: UploadServer) -> None:
    data = b"not a path " + os.urandom(8)
    url = server.create(len(data), metadata(filename="../../escape.mp4"))
    server.patch(url, 0, data)
    sha = hashlib.sha256(data).hexdigest()
    assert server.wait_status(url, "completed")["source_key"] == f"sources/{sha}"
    assert (server.data_dir / "sources" / sha).read_bytes() == data
    assert not [p for p in server.data_dir.parent.rglob("*escape*")]


# ---------------------------------------------------------------- completion


def test_a_completed_upload_is_registered_as_uploaded(server: UploadServer) -> None:
    data = os.urandom(1000)
    sha = hashlib.sha256(data).hexdigest()
    url = server.create(len(data), metadata(sha256=sha))
    server.patch(url, 0, data)
    status = server.wait_status(url, "completed")
    assert status["sha256"] == sha and status["handed_off"]
    with open_catalog(None, server.data_dir) as catalog:
        video = catalog.get_video(video_id_for(sha))
    assert video is not None
    assert (video.status, video.source_key, video.size_bytes) == (
        "uploaded",
        f"sources/{sha}",
        len(data),
    )


def test_a_declared_sha256_mismatch_fails_the_upload(server: UploadServer) -> None:
    data = os.urandom(1000)
    declared = hashlib.sha256(b"other bytes").hexdigest()
    url = server.create(len(data), metadata(sha256=declared))
    reply = server.patch(url, 0, data)
    assert reply.status == 422 and b"sha256" in reply.body
    status = server.status(url)
    assert status["status"] == "failed" and declared in status["error"]
    assert server.call("HEAD", url, V).status == 410
    actual = hashlib.sha256(data).hexdigest()
    assert not (server.data_dir / "sources" / actual).exists()
    with open_catalog(None, server.data_dir) as catalog:
        assert catalog.find_by_sha256(actual) is None


def test_the_janitor_expires_stale_uploads(tmp_path: Path) -> None:
    srv = UploadServer.start(tmp_path / "janitor",
                             env={"VIDPIPE_UPLOAD__JANITOR_INTERVAL_SECONDS": "0.5"})  # fmt: skip
    try:
        url = srv.create(10)
        srv.patch(url, 0, b"abc")
        staged = srv.data_dir / "uploads" / _upload_id(url)
        assert staged.exists()
        _sql(srv, "UPDATE vidpipe.uploads SET expires_at = now() WHERE id = %s", _upload_id(url))
        wait_until(lambda: not staged.exists(), what="the janitor to drop the expired upload")
        assert srv.call("HEAD", url, V).status == 410
        assert srv.status(url)["status"] == "expired"
    finally:
        srv.stop()


def test_part_sizes_keep_every_upload_within_10000_parts() -> None:
    from vidpipe.infra.upload.stores import MAX_PARTS, MIN_PART_BYTES, part_size_for

    for length in (0, 1, 5 * MIB, 80 * 1024 * MIB, 5 * 1024 * 1024 * MIB, 10_000 * 8 * MIB + 1):
        size = part_size_for(length, 8 * MIB)
        assert size >= max(8 * MIB, MIN_PART_BYTES) and size % MIB == 0
        assert -(-length // size) <= MAX_PARTS
    assert part_size_for(100 * MIB, 5 * MIB) == 5 * MIB
    with pytest.raises(ValueError):
        part_size_for(MAX_PARTS * 5 * 1024 * MIB + 1, 8 * MIB)


def test_the_s3_hook_is_off_without_a_secret(server: UploadServer) -> None:
    body = b'{"Records": []}'
    reply = http("POST", f"{server.base}/hooks/s3", {"Authorization": "Bearer x"}, body)
    assert reply.status == 404


def test_method_override_and_unknown_methods(server: UploadServer) -> None:
    url = server.create(2)
    override = OCTETS | {"Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}
    assert server.call("POST", url, override, b"ab").header("upload-offset") == "2"
    assert server.call("PUT", url, V, b"x").status == 405
