"""Perceptual fingerprints: the same video re-encoded, resized or trimmed matches; others do not.

Real media: Big Buck Bunny (5.3 s, 1280x720) from samples/; its
variants and the unrelated clips are made here with the static ffmpeg and
sampled exactly as the transcode samples frames.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import BUNNY, ffmpeg
from tests.test_vision import asset, sample_frames
from vidpipe.encoders.fingerprint import (
    Fingerprint,
    FrameHash,
    MatchOptions,
    fingerprint,
    hamming,
    image_hash,
    match,
)

X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-an")


# ---------------------------------------------------------------- one picture


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_hash_survives_resize_and_recompression() -> None:
    bus = Image.open(asset("bus.jpg"))
    h, flat = image_hash(bus)
    assert not flat and h >> 63 == 0  # the DC bit is never set
    small = jpeg(bus.resize((bus.width // 3, bus.height // 3)), 30)
    assert hamming(h, image_hash(small)[0]) <= 6
    assert hamming(h, image_hash(bus.filter(ImageFilter.GaussianBlur(1.5)))[0]) <= 6


def test_hash_tells_pictures_apart() -> None:
    bus, _ = image_hash(Image.open(asset("bus.jpg")))
    zidane, _ = image_hash(Image.open(asset("zidane.jpg")))
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (240, 320), np.uint8))
    assert hamming(bus, zidane) > 20
    assert hamming(bus, image_hash(noise)[0]) > 20


def test_flat_frames_are_marked() -> None:
    assert image_hash(Image.new("RGB", (640, 360), "black"))[1]
    assert image_hash(Image.new("RGB", (640, 360), (200, 30, 30)))[1]
    assert not image_hash(Image.open(asset("zidane.jpg")))[1]


def test_fingerprint_round_trips_through_json() -> None:
    fp = Fingerprint((FrameHash(0.0, 2**63 - 1, False), FrameHash(1.5, 0x1234, True)))
    doc = json.loads(json.dumps(fp.to_dict()))
    assert doc["frames"][0]["hash"] == "7fffffffffffffff"
    assert Fingerprint.from_dict(doc) == fp


def test_match_needs_evidence() -> None:
    one = Fingerprint((FrameHash(0.0, 0xABCDEF, False),))
    result = match(one, one)
    assert not result.is_duplicate and result.compared < MatchOptions().min_compared
    flat = Fingerprint(tuple(FrameHash(float(t), 0, True) for t in range(10)))
    assert match(flat, flat).compared == 0 and not match(flat, flat).is_duplicate


# ---------------------------------------------------------------- real video


@dataclass(frozen=True)
class Clips:
    original: Fingerprint
    small: Fingerprint  # 360p, re-encoded at a low quality
    trimmed: Fingerprint  # first second cut off
    trimmed_small: Fingerprint  # 1.5 s cut off, 360p, re-encoded
    pattern: Fingerprint  # testsrc2
    people: Fingerprint  # bus.jpg then zidane.jpg
    black: Fingerprint


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    root = tmp_path_factory.mktemp("fingerprint")

    def made(name: str, *args: str) -> Path:
        out = root / f"{name}.mp4"
        ffmpeg(*args, *X264, str(out))
        return out

    def fp(video: Path, name: str) -> Fingerprint:
        return fingerprint(sample_frames(video, root / name, 5.3))

    lavfi = ("-f", "lavfi", "-i")
    people = (
        "-loop", "1", "-t", "2.5", "-i", str(asset("bus.jpg")),
        "-loop", "1", "-t", "2.5", "-i", str(asset("zidane.jpg")),
        "-filter_complex",
        "[0:v]scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,"
        "setsar=1,fps=25[a];[1:v]scale=1280:720,setsar=1,fps=25[b];[a][b]concat=n=2:v=1[v]",
        "-map", "[v]",
    )  # fmt: skip
    return Clips(
        original=fp(BUNNY, "original"),
        small=fp(made("small", "-i", str(BUNNY), "-vf", "scale=-2:360", "-crf", "35"), "small"),
        trimmed=fp(made("trimmed", "-ss", "1", "-i", str(BUNNY)), "trimmed"),
        trimmed_small=fp(
            made("trim-small", "-ss", "1.5", "-i", str(BUNNY), "-vf", "scale=-2:360", "-crf", "32"),
            "trimmed_small",
        ),
        pattern=fp(made("pattern", *lavfi, "testsrc2=s=1280x720:r=25:d=5"), "pattern"),
        people=fp(made("people", *people), "people"),
        black=fp(made("black", *lavfi, "color=c=black:s=1280x720:r=25:d=5"), "black"),
    )


@pytest.mark.slow
def test_reencoded_360p_is_a_duplicate(clips: Clips) -> None:
    result = match(clips.original, clips.small)
    assert result.is_duplicate and result.score >= 0.9
    assert result.offset_seconds == 0.0 and result.compared >= 10


@pytest.mark.slow
def test_trimmed_copy_is_a_duplicate_at_its_offset(clips: Clips) -> None:
    result = match(clips.original, clips.trimmed)
    assert result.is_duplicate and result.score >= 0.9
    assert result.offset_seconds == pytest.approx(-1.0, abs=0.05)
    back = match(clips.trimmed, clips.original)
    assert back.score == result.score and back.offset_seconds == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
def test_trimmed_off_grid_and_resized_is_a_duplicate(clips: Clips) -> None:
    # 1.5 s trim: every sample falls half-way between the original's samples
    result = match(clips.original, clips.trimmed_small)
    assert result.is_duplicate, result
    assert -2.0 <= result.offset_seconds <= -1.0  # known to the sampling interval


@pytest.mark.slow
def test_unrelated_videos_do_not_match(clips: Clips) -> None:
    for other in (clips.pattern, clips.people):
        result = match(clips.original, other)
        assert not result.is_duplicate, result
        assert result.score <= 0.2 and result.compared >= 6
    assert not match(clips.pattern, clips.people).is_duplicate
    assert not match(clips.black, clips.black).is_duplicate  # nothing to compare on black
    assert all(f.flat for f in clips.black.frames)
