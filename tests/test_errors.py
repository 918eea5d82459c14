"""Whose fault is it: only a fault of the upload rejects it; ours and the config's never do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import BUNNY, MEDIA_ONLY, run_cli
from vidpipe.encoders import hls
from vidpipe.flows.cli import app
from vidpipe.infra.catalog import NewVideo, open_catalog, stop_embedded
from vidpipe.infra.errors import (
    ConfigError,
    InternalError,
    OutputInvalid,
    ResourceExhausted,
    UploadRejected,
    import_failure,
    is_retryable,
)
from vidpipe.infra.ingest import sha256_file, video_id_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def in_process(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI run in this process (so a test can break vidpipe on purpose), media only."""
    for key, value in MEDIA_ONLY.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VIDPIPE_ENCODE__PRESET", "ultrafast")
    yield data_dir
    stop_embedded(data_dir)


def test_our_broken_output_is_our_fault_not_the_uploads(
    in_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hls.media_playlist
    calls = {"n": 0}

    def corrupt_one(playlist: hls.Playlist, segment_seconds: int, *, ended: bool) -> str:
        if ended:
            calls["n"] += 1
            if calls["n"] == 1:  # the top rung's VOD playlist loses its last segment
                playlist = hls.Playlist(playlist.init, playlist.segments[:-1])
        return real(playlist, segment_seconds, ended=ended)

    monkeypatch.setattr(hls, "media_playlist", corrupt_one)
    result = CliRunner().invoke(app, ["process", str(BUNNY), "--data-dir", str(in_process)])
    assert result.exit_code == 1, result.output
    assert "internal error:" in result.output and "bug in vidpipe" in result.output
    assert "Traceback" not in result.output
    video_id = video_id_for(sha256_file(BUNNY))
    with open_catalog(None, in_process) as catalog:
        video = catalog.get_video(video_id)
    assert video is not None and video.status == "failed"  # not "rejected"
    assert video.error and "failed validation" in video.error
    # Nothing half published: the EVENT master that played while it encoded is withdrawn.
    assert not (in_process / "videos" / video_id / "master.m3u8").exists()


def test_a_configuration_error_leaves_the_status_as_it_was(in_process: Path) -> None:
    sha = sha256_file(BUNNY)
    video_id = video_id_for(sha)
    with open_catalog(None, in_process) as catalog:
        catalog.register_video(NewVideo(video_id, sha, BUNNY.stat().st_size, f"sources/{sha}"))
    from vidpipe.flows.process_video import process_video

    with pytest.raises(ConfigError, match="no rendition 'avc_9999p'"):
        process_video(str(BUNNY), overrides={"data_dir": str(in_process)}, renditions=["avc_9999p"])
    with open_catalog(None, in_process) as catalog:
        video = catalog.get_video(video_id)
    assert video is not None and video.status == "uploaded"
    assert video.error and video.error.startswith("configuration error:")
    assert not (in_process / "videos" / video_id / "master.m3u8").exists()  # nothing encoded


def test_error_text_is_never_markup_or_terminal_codes(data_dir: Path) -> None:
    for name in ("no[/x]such.mp4", "bold[red]x[/red].mp4", "esc\x1b[2Jape.mp4"):
        run = run_cli("process", str(data_dir / name), "--data-dir", str(data_dir))
        assert run.returncode == 2, run.stderr
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
        assert "Traceback" not in run.stderr and "\x1b" not in run.stderr
    assert "no[/x]such.mp4" in run_cli("process", str(data_dir / "no[/x]such.mp4")).stderr


def test_running_out_of_memory_is_not_the_uploads_fault() -> None:
    oom = ImportError("libtorch_cpu.so: failed to map segment from shared object")
    err = import_failure("object detection needs ultralytics", oom, "reinstall")
    assert isinstance(err, ResourceExhausted) and is_retryable(err)
    assert not isinstance(err, UploadRejected) and "ran out of memory" in str(err)
    missing = import_failure("object detection needs ultralytics", ImportError("no ultralytics"),
                             "pip install -e .")  # fmt: skip
    assert isinstance(missing, ConfigError) and "pip install -e ." in str(missing)
    assert "vidpipe[vision]" not in str(missing)  # the hint names nothing that does not exist
    assert not issubclass(OutputInvalid, UploadRejected) and issubclass(
        OutputInvalid, InternalError
    )


def test_a_worker_without_the_service_says_what_to_set(tmp_path: Path) -> None:
    """``vidpipe worker`` joins a service: without its API or its catalog it refuses, exit 2,
    naming the variable to set; an unknown pool is named with the ones there are."""
    base = {"PREFECT_API_URL": "", "VIDPIPE_DATABASE_URL": ""}
    args = ("worker", "--pool", "vidpipe-gpu", "--data-dir", str(tmp_path))
    no_api = run_cli(*args, env=base)
    assert no_api.returncode == 2 and "PREFECT_API_URL is not set" in no_api.stderr
    api = base | {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    no_db = run_cli(*args, env=api)
    assert no_db.returncode == 2 and "VIDPIPE_DATABASE_URL is not set" in no_db.stderr
    known = api | {"VIDPIPE_DATABASE_URL": "postgresql://vidpipe@db.invalid/vidpipe"}
    unknown = run_cli("worker", "--pool", "vidpipe-tpu", env=known)
    assert unknown.returncode == 2, unknown.stderr
    assert "no work pool 'vidpipe-tpu'" in unknown.stderr and "vidpipe-gpu" in unknown.stderr
    assert not list(tmp_path.iterdir()), "a refused worker made its data dir"
