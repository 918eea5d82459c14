"""Shared fixtures: generated media, a real Prefect server, a moto S3 server, the CLI.

Media is generated with ffmpeg's lavfi sources (a few seconds each) or taken
from tests/data and samples/. Every service is real and listens on loopback only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidpipe.flows.server import free_port
from vidpipe.flows.server import prefect_server as local_prefect_server
from vidpipe.infra.ffmpeg import ffmpeg_exe

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
JFK_WAV = DATA / "jfk.wav"
BUNNY = REPO / "samples" / "bigbuckbunny_720p_51.mp4"


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


# ---------------------------------------------------------------- media


class Media:
    """Generates each test clip once per session, on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _make(self, name: str, *args: str) -> Path:
        path = self.root / name
        if not path.exists():
            tmp = path.with_name(f".tmp-{name}")
            ffmpeg(*args, str(tmp))
            tmp.rename(path)
        return path

    def _lavfi(self, name: str, video: str | None, audio: str | None, *extra: str) -> Path:
        args: list[str] = []
        if video:
            args += ["-f", "lavfi", "-i", video]
        if audio:
            args += ["-f", "lavfi", "-i", audio]
        if video:
            args += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "20"]
        if audio:
            args += ["-c:a", "aac", "-b:a", "96k"]
        return self._make(name, *args, *extra, "-shortest")

    @property
    def clip_1080p(self) -> Path:
        return self._lavfi(
            "1080p.mp4", "testsrc2=s=1920x1080:r=30:d=3", "sine=f=440:d=3", "-pix_fmt", "yuv420p"
        )

    @property
    def portrait(self) -> Path:
        return self._lavfi(
            "portrait.mp4", "testsrc2=s=720x1280:r=30:d=2", "sine=d=2", "-pix_fmt", "yuv420p"
        )

    @property
    def rotated(self) -> Path:
        """640x360 coded, with a display matrix turning it 90 degrees: shows as 360x640."""
        plain = self._lavfi(
            "rot-src.mp4", "testsrc2=s=640x360:r=25:d=2", "sine=d=2", "-pix_fmt", "yuv420p"
        )
        return self._make(
            "rotated.mp4", "-display_rotation:v", "90", "-i", str(plain), "-c", "copy"
        )

    @property
    def odd(self) -> Path:
        """An odd-sized, non-square-pixel source (4:4:4 allows odd dimensions)."""
        return self._lavfi(
            "odd.mp4",
            "testsrc2=s=641x361:r=24:d=2",
            "sine=d=2",
            "-pix_fmt",
            "yuv444p",
            "-vf",
            "setsar=4/3",
        )

    @property
    def vfr(self) -> Path:
        return self._make(
            "vfr.mp4",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x240:r=30:d=3,setpts='N/30/TB+if(gt(N,30),0.3*sin(N)/30/TB,0)'",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-fps_mode",
            "passthrough",
        )

    @property
    def audio_only(self) -> Path:
        return self._lavfi("audio.m4a", None, "sine=f=330:d=3")

    @property
    def video_only(self) -> Path:
        return self._lavfi(
            "video-only.mp4", "testsrc2=s=480x270:r=30:d=2", None, "-pix_fmt", "yuv420p"
        )

    @property
    def black(self) -> Path:
        """Black for the first half, then a pattern: the poster must not be black."""
        return self._lavfi(
            "black-start.mp4",
            "testsrc2=s=640x360:r=25:d=4,drawbox=c=black:t=fill:enable='lt(t,2)'",
            "sine=d=4",
            "-pix_fmt",
            "yuv420p",
        )

    @property
    def jfk(self) -> Path:
        """The 11 s JFK speech under a small test pattern: a video with real speech."""
        return self._make(
            "jfk.mp4", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25", "-i",
            str(JFK_WAV), "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
            "-shortest",
        )  # fmt: skip

    @property
    def silent(self) -> Path:
        return self._lavfi(
            "silent.mp4", "testsrc2=s=320x180:r=25:d=4", "anullsrc=d=4", "-pix_fmt", "yuv420p"
        )

    @property
    def hls_as_mp4(self) -> Path:
        path = self.root / "playlist.mp4"
        path.write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n/etc/passwd\n#EXT-X-ENDLIST\n"
        )
        return path

    @property
    def concat_as_mp4(self) -> Path:
        path = self.root / "concat.mp4"
        path.write_text("ffconcat version 1.0\nfile '/etc/passwd'\n")
        return path

    @property
    def corrupt(self) -> Path:
        """A real MP4 whose sample data was overwritten: the container parses, nothing decodes."""
        good = self.clip_1080p.read_bytes()
        mdat = good.find(b"mdat")
        path = self.root / "corrupt.mp4"
        if mdat < 0:
            raise RuntimeError("test clip has no mdat box")
        body = bytearray(good)
        for i in range(mdat + 8, len(body)):
            body[i] = 0xAB
        path.write_bytes(bytes(body))
        return path

    @property
    def truncated(self) -> Path:
        path = self.root / "truncated.mp4"
        path.write_bytes(self.clip_1080p.read_bytes()[:4096])
        return path

    @property
    def empty(self) -> Path:
        path = self.root / "empty.mp4"
        path.write_bytes(b"")
        return path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return Media(tmp_path_factory.mktemp("media"))


# ---------------------------------------------------------------- services


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server on loopback; every flow in the session reports to it."""
    home = tmp_path_factory.mktemp("prefect-home")
    keys = ("PREFECT_API_URL", "PREFECT_HOME")
    saved = {k: os.environ.get(k) for k in keys}
    with local_prefect_server(home) as url:
        os.environ["PREFECT_API_URL"] = url
        os.environ["PREFECT_HOME"] = str(home)
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        try:
            yield url
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto in server mode, spoken to over HTTP through boto3."""
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[key] = value
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(f"http://127.0.0.1:{port}", "vidpipe-test")
    s3.client().create_bucket(Bucket=s3.bucket)
    try:
        yield s3
    finally:
        server.stop()


# ---------------------------------------------------------------- the CLI


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliRun:
    proc = subprocess.run(
        [sys.executable, "-m", "vidpipe.flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | (env or {}),
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Published:
    data_dir: Path
    video_id: str

    @property
    def video_dir(self) -> Path:
        return self.data_dir / "videos" / self.video_id

    @property
    def master_key(self) -> str:
        return f"videos/{self.video_id}/master.m3u8"

    @property
    def manifest(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.video_dir / "manifest.json").read_text())


# Media-only runs: tests of the ladder itself skip the model stages to stay fast.
MEDIA_ONLY = {
    f"VIDPIPE_{section}__ENABLED": "false"
    for section in ("TRANSCRIBE", "DETECT", "SAFETY", "DEEPFAKE", "EMBED")
}


def process_to(
    data_dir: Path, source: Path, *args: str, env: dict[str, str] | None = None
) -> Published:
    """Run ``vidpipe process`` and return where it published; fail with its stderr."""
    run = run_cli("process", str(source), "--data-dir", str(data_dir), *args, env=env)
    assert run.returncode == 0, f"vidpipe process failed ({run.returncode}):\n{run.stderr}"
    videos = sorted((data_dir / "videos").iterdir())
    latest = max(videos, key=lambda p: (p / "manifest.json").stat().st_mtime)
    return Published(data_dir, latest.name)


def media_hashes(pub: Published) -> dict[str, str]:
    """What a viewer gets, by role rather than by attempt: rendition files and captions."""
    out = {}
    for f in pub.manifest["files"]:
        parts = f["key"].split("/")
        if "hls" in parts or parts[0] == "captions":
            out["/".join(parts[parts.index("hls") :] if "hls" in parts else parts)] = f["sha256"]
    return out


@pytest.fixture(scope="session")
def published_bunny(tmp_path_factory: pytest.TempPathFactory) -> Published:
    """The committed Big Buck Bunny sample, processed once per session with defaults."""
    return process_to(tmp_path_factory.mktemp("bunny"), BUNNY)


@pytest.fixture(scope="session")
def published_jfk(tmp_path_factory: pytest.TempPathFactory, media: Media) -> Published:
    """JFK's inaugural line as a video, processed once per session: captions, search."""
    return process_to(tmp_path_factory.mktemp("jfk"), media.jfk)


JFK_REFERENCE = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def copy_sample(dest: Path) -> Path:
    target = dest / "sample.mp4"
    shutil.copyfile(BUNNY, target)
    return target
