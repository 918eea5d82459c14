"""The catalog through the CLI: ls, show, search, reprocess, duplicates, bad DSNs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import BUNNY, MEDIA_ONLY, Media, Published, ffmpeg, process_to, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_ls_and_show(published_jfk: Published) -> None:
    d = str(published_jfk.data_dir)
    listed = run_cli("ls", "--data-dir", d)
    assert listed.returncode == 0, listed.stderr
    assert published_jfk.video_id in listed.stdout and "published" in listed.stdout
    shown = run_cli("show", published_jfk.video_id, "--data-dir", d)
    assert shown.returncode == 0, shown.stderr
    for word in (
        "renditions",
        "avc_180p25",
        "ladder",
        "captions",
        "detections",
        "safety",
        "deepfake",
        "unavailable",
        "cpu s",
        "gpu s",
    ):
        assert word in shown.stdout, word
    missing = run_cli("show", "vnope", "--data-dir", d)
    assert missing.returncode == 2 and "no video 'vnope'" in missing.stderr


def test_search_finds_the_line_at_its_time(published_jfk: Published) -> None:
    d = str(published_jfk.data_dir)
    run = run_cli("search", "ask not what your country can do", "--data-dir", d)
    assert run.returncode == 0, run.stderr
    hit_rows = [line for line in run.stdout.splitlines() if published_jfk.video_id in line]
    assert hit_rows, run.stdout
    assert "0:00.0" in hit_rows[0] or "0:0" in hit_rows[0]
    assert float(hit_rows[0].split("│")[1]) > 0.5
    # A query that looks like SQL is just text: no error, nothing changes.
    evil = run_cli("search", "'; DROP TABLE videos; --", "--data-dir", d)
    assert evil.returncode == 0, evil.stderr
    assert published_jfk.video_id in run_cli("ls", "--data-dir", d).stdout
    labelled = run_cli("search", "country", "--label", "'; DROP TABLE videos; --", "--data-dir", d)
    assert labelled.returncode == 0 and "0 hits" in labelled.stdout


def test_rerun_keeps_published_attempt_and_caches_everything(published_jfk: Published) -> None:
    before = published_jfk.manifest
    run = run_cli(
        "process",
        str(Path(before["source"]["key"]).name),
        "--data-dir",
        str(published_jfk.data_dir),
    )
    assert run.returncode == 2  # a bare sha256 is not a file here: clear error, nothing changes
    source = published_jfk.data_dir / before["source"]["key"]
    again = run_cli("process", str(source), "--data-dir", str(published_jfk.data_dir))
    assert again.returncode == 0, again.stderr
    assert "nothing new" in again.stdout
    stages = ("probe", "ladder", "captions", "detections", "safety", "deepfake", "embeddings")
    for stage in stages:
        row = next(line for line in again.stdout.splitlines() if line.strip("│ ").startswith(stage))
        assert "cached" in row, row
    assert published_jfk.manifest["ladder"]["attempt"] == before["ladder"]["attempt"]


def test_rejected_and_failed_are_listed(media: Media, data_dir: Path) -> None:
    run = run_cli("process", str(media.corrupt), "--data-dir", str(data_dir))
    assert run.returncode == 2
    listed = run_cli("ls", "--status", "rejected", "--data-dir", str(data_dir))
    assert listed.returncode == 0 and "rejected" in listed.stdout and "1 videos" in listed.stdout


def test_reprocess_reruns_only_what_changed(media: Media, data_dir: Path) -> None:
    pub = process_to(
        data_dir,
        media.jfk,
        env={
            "VIDPIPE_DETECT__ENABLED": "false",
            "VIDPIPE_SAFETY__ENABLED": "false",
            "VIDPIPE_DEEPFAKE__ENABLED": "false",
        },
    )
    env = {
        "VIDPIPE_TRANSCRIBE__BEAM_SIZE": "2",
        "VIDPIPE_DETECT__ENABLED": "false",
        "VIDPIPE_SAFETY__ENABLED": "false",
        "VIDPIPE_DEEPFAKE__ENABLED": "false",
    }
    attempt = pub.manifest["ladder"]["attempt"]
    before = {p: p.stat().st_mtime_ns for p in pub.video_dir.rglob("*") if p.is_file()}
    plan = run_cli("reprocess", pub.video_id, "--dry-run", "--data-dir", str(data_dir), env=env)
    assert plan.returncode == 0, plan.stderr
    rows = {
        line.split("│")[2].strip(): line.split("│")[5].strip()
        for line in plan.stdout.splitlines()
        if line.startswith("│")
    }
    assert rows == {
        "probe": "reuse",
        "ladder": "reuse",
        "captions": "run: options changed",
        "detections": "skip: disabled",
        "safety": "skip: disabled",
        "deepfake": "skip: disabled",
        "fingerprint": "reuse",
        "embeddings": "run: upstream re-runs",
    }
    after = {p: p.stat().st_mtime_ns for p in pub.video_dir.rglob("*") if p.is_file()}
    assert after == before  # the dry run wrote nothing

    run = run_cli("reprocess", pub.video_id, "--data-dir", str(data_dir), env=env)
    assert run.returncode == 0, run.stderr
    assert "ran captions, embeddings" in run.stdout
    assert "1 ok, 0 failed" in run.stdout
    assert pub.manifest["ladder"]["attempt"] == attempt  # the transcode attempt is reused
    forced = run_cli(
        "reprocess",
        pub.video_id,
        "--stages",
        "ladder",
        "--force",
        "--data-dir",
        str(data_dir),
        env=env,
    )
    assert forced.returncode == 0, forced.stderr
    assert "ladder" in forced.stdout.split("ran", 1)[1]
    assert (
        pub.manifest["ladder"]["attempt"] != attempt
    )  # a forced transcode publishes a fresh attempt
    bad = run_cli(
        "reprocess", pub.video_id, "--stages", "transcode", "--force", "--data-dir", str(data_dir)
    )
    assert bad.returncode == 2 and "unknown stage 'transcode'" in bad.stderr


def test_near_duplicate_is_flagged(data_dir: Path, tmp_path: Path) -> None:
    small = tmp_path / "bunny-360p.mp4"
    ffmpeg(
        "-i",
        str(BUNNY),
        "-vf",
        "scale=640:360",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        str(small),
    )
    first = process_to(data_dir, BUNNY, env=MEDIA_ONLY)
    second = process_to(data_dir, small, env=MEDIA_ONLY)
    assert second.video_id != first.video_id
    dups = second.manifest["fingerprint"]["near_duplicates"]
    assert [d["video_id"] for d in dups] == [first.video_id], dups


def test_database_errors_are_clear(data_dir: Path) -> None:
    closed = run_cli(
        "ls",
        "--data-dir",
        str(data_dir),
        env={"VIDPIPE_DATABASE_URL": "postgresql://u:secret@127.0.0.1:9/db"},
    )
    assert closed.returncode != 0
    assert "127.0.0.1" in closed.stderr and "secret" not in closed.stderr
    bad = run_cli("ls", "--data-dir", str(data_dir), env={"VIDPIPE_DATABASE_URL": "not a dsn"})
    assert bad.returncode == 2 and "error:" in bad.stderr


def test_people_are_detected_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    clip = tmp_path / "people.mp4"
    ffmpeg(
        "-loop",
        "1",
        "-t",
        "2",
        "-i",
        str(assets / "bus.jpg"),
        "-loop",
        "1",
        "-t",
        "2",
        "-i",
        str(assets / "zidane.jpg"),
        "-filter_complex",
        "[0]scale=640:480,setsar=1[a];[1]scale=640:480,setsar=1[b];[a][b]concat=n=2:v=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-r",
        "25",
        str(clip),
    )
    pub = process_to(data_dir, clip, env={"VIDPIPE_TRANSCRIBE__ENABLED": "false"})
    det = pub.manifest["detections"]
    person = next(lb for lb in det["labels"] if lb["label"] == "person")
    assert person["frames"] >= 3 and person["max_confidence"] > 0.5
    full = json.loads((pub.video_dir / det["file"]).read_text())
    boxes = [d["box"] for f in full["frames"] for d in f["detections"]]
    assert len(boxes) >= 3 and all(0 <= v <= 1 for b in boxes for v in b)
    assert pub.manifest["deepfake"]["status"] == "unavailable"
    assert pub.manifest["deepfake"]["reason"] == "no deepfake model configured"
    assert pub.manifest["safety"]["verdict"] == "ok"
    shown = run_cli("show", pub.video_id, "--data-dir", str(data_dir))
    assert "top labels" in shown.stdout and "person" in shown.stdout


def test_reprocess_one_rendition(media: Media, data_dir: Path) -> None:
    import m3u8

    from tests.test_process import check_published

    pub = process_to(data_dir, media.clip_1080p, env=MEDIA_ONLY)
    before = m3u8.load(str(pub.video_dir / "master.m3u8"))
    uris = {p.stream_info.resolution[1]: p.uri for p in before.playlists}
    rung = Path(uris[240]).parent.name  # avc_240p30_500k
    kept = {h: (pub.video_dir / u).read_bytes() for h, u in uris.items() if h != 240}

    run = run_cli(
        "reprocess", pub.video_id, "--renditions", rung, "--data-dir", str(data_dir), env=MEDIA_ONLY
    )
    assert run.returncode == 0, run.stderr
    assert "ladder-rungs" in run.stdout and "1 ok, 0 failed" in run.stdout
    after = check_published(pub)  # aligned segments, keyframes, every URI present
    new_uris = {p.stream_info.resolution[1]: p.uri for p in after.playlists}
    assert new_uris[240] != uris[240]  # the rung now lives in a fresh attempt
    assert new_uris[240].split("/")[0] == pub.manifest["ladder"]["attempt"]
    for h, data in kept.items():  # every other rung is reused as it was
        assert new_uris[h] == uris[h] and (pub.video_dir / uris[h]).read_bytes() == data

    bad = run_cli(
        "reprocess",
        pub.video_id,
        "--renditions",
        "avc_4000p",
        "--data-dir",
        str(data_dir),
        env=MEDIA_ONLY,
    )
    assert bad.returncode == 1 and "no rendition 'avc_4000p'" in bad.stdout
