"""Detection, safety and deepfake stages on frames sampled the way the transcode samples them.

Media: ultralytics' own ``assets/bus.jpg`` (four people) and ``zidane.jpg``
(two men, faces visible) made into a 4-second clip by ffmpeg, and a
``testsrc2`` clip with nobody in it. Frames come out of ffmpeg with vidpipe's
own frame-sampler filter and ``write_frame_index``. The deepfake classifier
is a tiny ONNX graph built here, byte by byte (the ``onnx`` package is not a
dependency): global average pool → linear → two logits.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ffmpeg
from vidpipe.encoders.encode import write_frame_index
from vidpipe.encoders.transcode import frame_sampler
from vidpipe.infra.errors import ConfigError
from vidpipe.infra.settings import FrameSettings
from vidpipe.models import deepfake, loader, safety
from vidpipe.models.detect import DetectOptions, detect
from vidpipe.models.vision import FramesUnavailable, frame_durations, read_index

# ---------------------------------------------------------------- media helpers


def asset(name: str) -> Path:
    return loader.packaged_file("ultralytics", "assets", name)


def sample_frames(video: Path, out: Path, duration_seconds: float) -> Path:
    """Frames as the transcode writes them: vidpipe's sampler filter, ms names, index.json."""
    out.mkdir(parents=True, exist_ok=True)
    job: Any = SimpleNamespace(frames=FrameSettings(), duration_hint_seconds=duration_seconds)
    ffmpeg(
        "-i", str(video), "-filter_complex", f"[0:v:0]{frame_sampler(job)}[frames]",
        "-map", "[frames]", "-an", "-c:v", "mjpeg", "-q:v", "3", "-fps_mode", "passthrough",
        "-enc_time_base", "1/1000", "-frame_pts", "1", "-f", "image2", str(out / "%010d.jpg"),
    )  # fmt: skip
    assert write_frame_index(out) > 0
    return out


def frames_from_images(out: Path, images: list[Image.Image], step_seconds: float = 1.0) -> Path:
    """A frames directory written directly: one JPEG per image, longest side 640 px."""
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img = img.convert("RGB")
        img.thumbnail((640, 640))
        img.save(out / f"{round(i * step_seconds * 1000):010d}.jpg", quality=90)
    write_frame_index(out)
    return out


@pytest.fixture(scope="module")
def people_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bus.jpg for 2 s, then zidane.jpg for 2 s, 1280x720 H.264, sampled at 1 fps."""
    root = tmp_path_factory.mktemp("people")
    clip = root / "people.mp4"
    ffmpeg(
        "-loop", "1", "-t", "2", "-i", str(asset("bus.jpg")),
        "-loop", "1", "-t", "2", "-i", str(asset("zidane.jpg")),
        "-filter_complex",
        "[0:v]scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,"
        "setsar=1,fps=25[a];[1:v]scale=1280:720,setsar=1,fps=25[b];[a][b]concat=n=2:v=1[v]",
        "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip),
    )  # fmt: skip
    return sample_frames(clip, root / "frames", 4.0)


@pytest.fixture(scope="module")
def empty_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A testsrc2 pattern: colours, text, no people, no faces."""
    root = tmp_path_factory.mktemp("pattern")
    clip = root / "pattern.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=1280x720:r=25:d=3",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip),
    )  # fmt: skip
    return sample_frames(clip, root / "frames", 3.0)


def zidane_times(frames_dir: Path) -> list[float]:
    return [f.t for f in read_index(frames_dir) if f.t >= 2.0]


# ---------------------------------------------------------------- shared helpers


def test_sampled_frames_look_like_the_transcodes(people_frames: Path) -> None:
    frames = read_index(people_frames)
    assert [f.t for f in frames] == [0.0, 1.0, 2.0, 3.0]
    with Image.open(frames[0].path) as img:
        assert max(img.size) == 640


def test_read_index_refuses_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(FramesUnavailable, match="no frames index"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps([{"t": 0.0, "file": "0000000000.jpg"}]))
    with pytest.raises(FramesUnavailable, match="missing frame"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps([{"t": 0.0, "file": "../etc/passwd"}]))
    with pytest.raises(FileNotFoundError):  # FramesUnavailable is also a FileNotFoundError
        read_index(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(FramesUnavailable, match="malformed"):
        read_index(tmp_path)


def test_frame_durations_are_gaps_capped() -> None:
    # regular 1 s samples, one scene-change pick at 2.5, a 10 s hole, then the end
    assert frame_durations([0.0, 1.0, 2.0, 2.5, 3.0, 13.0]) == [1.0, 1.0, 0.5, 0.5, 1.5, 1.0]
    assert frame_durations([0.0, 4.0, 8.0], max_gap_seconds=5.0) == [4.0, 4.0, 4.0]
    assert frame_durations([7.0]) == [1.0]
    assert frame_durations([]) == []


# ---------------------------------------------------------------- detect


@pytest.mark.slow
def test_detect_finds_the_people(people_frames: Path) -> None:
    result = detect(people_frames, DetectOptions(device="cpu"))
    assert result.status.ok and result.device == "cpu" and result.frame_count == 4
    assert result.model.endswith("fall_detection/models/best.pt") and result.model_sha256
    people = [d for f in result.frames for d in f.detections if d.label == "person"]
    assert len(people) >= 3
    bus = [f for f in result.frames if f.t < 2.0]
    assert all(sum(d.label == "person" for d in f.detections) >= 3 for f in bus)
    for d in people:
        x1, y1, x2, y2 = d.box
        assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0
        assert 0.35 <= d.confidence <= 1.0
    summary = result.summary("person")
    assert summary is not None
    assert summary.frames == 4 and summary.first_seen == 0.0 and summary.last_seen == 3.0
    assert summary.seconds_present == pytest.approx(4.0)
    assert summary.max_confidence == max(d.confidence for d in people)
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["labels"][0]["label"] == "person" and len(doc["frames"]) == 4
    assert "inference_seconds" not in doc  # to_dict is content only: same frames, same bytes
    assert detect(people_frames, DetectOptions(device="cpu")).to_dict() == result.to_dict()


@pytest.mark.slow
def test_detect_finds_nobody_in_a_test_pattern(empty_frames: Path) -> None:
    result = detect(empty_frames, DetectOptions(device="cpu"))
    assert result.frame_count >= 3
    assert result.summary("person") is None
    assert all(not f.detections for f in result.frames)


@pytest.mark.slow
def test_detect_label_map_and_filter(people_frames: Path) -> None:
    raw = detect(people_frames, DetectOptions(device="cpu", label_map=()))
    assert {d.label for f in raw.frames for d in f.detections} <= {"Normal", "Fall"}
    assert raw.labels
    only_cars = detect(people_frames, DetectOptions(device="cpu", labels=("car",)))
    assert only_cars.labels == () and all(not f.detections for f in only_cars.frames)


def test_detect_refuses_a_missing_model(people_frames: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model file not found"):
        detect(people_frames, DetectOptions(model=str(tmp_path / "nope.pt"), device="cpu"))
    with pytest.raises(ConfigError, match="cannot load detection model"):
        detect(people_frames, DetectOptions(model="no-such-model-here.pt", device="cpu"))


# ---------------------------------------------------------------- safety


@pytest.mark.slow
def test_safety_passes_a_benign_clip(people_frames: Path) -> None:
    result = safety.screen(people_frames, safety.SafetyOptions(device="cpu"))
    assert result.status.ok and result.verdict == "ok"
    assert result.frame_count == 4 and len(result.frames) == 4
    assert 0.0 <= result.max_score < 0.6 and result.flagged == ()
    assert result.model.endswith("nudenet/320n.onnx")
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_safety_flags_frames_of_a_counted_class(tmp_path: Path) -> None:
    """The same path flags when the counted class is present: here a face (FACE_MALE)."""
    zidane = Image.open(asset("zidane.jpg"))
    face_crop = zidane.crop((zidane.width // 2, 0, zidane.width, zidane.height))
    frames = frames_from_images(tmp_path, [Image.open(asset("bus.jpg")), face_crop])
    # One frame may flag here only because the rule is opened up on purpose (k = n = 1, the
    # detector alone): the pipeline's default needs agreement across frames and models.
    opts = safety.SafetyOptions(
        explicit=("FACE_MALE",), threshold=0.5, review_threshold=0.5, classifier="none",
        combine="detector", window_frames=1, min_flagged_frames=1, min_review_frames=1,
        device="cpu",
    )  # fmt: skip
    result = safety.screen(frames, opts)
    assert result.verdict == "flagged"
    assert result.flagged == (1.0,)
    assert result.frames[1].label == "FACE_MALE" and result.max_score >= 0.5
    stricter = safety.screen(frames, replace(opts, threshold=0.99, review_threshold=0.99))
    assert stricter.verdict == "ok" and stricter.max_score == pytest.approx(result.max_score)


def test_safety_refuses_unknown_classes(people_frames: Path) -> None:
    with pytest.raises(ConfigError, match="unknown classes"):
        safety.screen(people_frames, safety.SafetyOptions(explicit=("NOT_A_CLASS",)))


# ---------------------------------------------------------------- deepfake


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value: int | str | bytes) -> bytes:
    """One protobuf field: a varint (wire type 0) or length-delimited bytes (2)."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, dims: list[int | str]) -> bytes:
    dim = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
    tensor_type = _field(1, 1) + _field(2, dim)  # elem_type FLOAT, shape
    return _field(1, name) + _field(2, _field(1, tensor_type))


def _initializer(name: str, array: np.ndarray) -> bytes:
    a = np.ascontiguousarray(array, dtype="<f4")
    dims = b"".join(_field(1, d) for d in a.shape)
    return dims + _field(2, 1) + _field(8, name) + _field(9, a.tobytes())


def _node(op: str, inputs: list[str], outputs: list[str], **ints: int) -> bytes:
    attrs = b"".join(
        _field(5, _field(1, k) + _field(3, v) + _field(20, 2)) for k, v in ints.items()
    )
    return (
        b"".join(_field(1, i) for i in inputs)
        + b"".join(_field(2, o) for o in outputs)
        + _field(4, op)
        + attrs
    )


def tiny_classifier(
    path: Path, weight: np.ndarray, bias: np.ndarray, size: int, batch: int | str = "N"
) -> Path:
    """ONNX (opset 13): input ``batch×3×size×size`` → mean per channel → ``W·x + b`` logits."""
    nodes = [
        _node("GlobalAveragePool", ["input"], ["pooled"]),
        _node("Flatten", ["pooled"], ["flat"], axis=1),
        _node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    graph = (
        b"".join(_field(1, n) for n in nodes)
        + _field(2, "tiny-deepfake")
        + _field(5, _initializer("W", weight))
        + _field(5, _initializer("B", bias))
        + _field(11, _value_info("input", [batch, 3, size, size]))
        + _field(12, _value_info("logits", [batch, 2]))
    )
    opset = _field(1, "") + _field(2, 13)
    path.write_bytes(
        _field(1, 8) + _field(2, "vidpipe-tests") + _field(7, graph) + _field(8, opset)
    )
    return path


# "fake" when the face crop is redder than it is green (after ImageNet normalisation)
W = np.array([[0.0, 0.0, 0.0], [1.5, -1.5, 0.2]], np.float32)
B = np.array([0.0, 0.1], np.float32)


def expected_score(
    frames_dir: Path, t: float, box: tuple[float, ...], opts: deepfake.DeepfakeOptions
) -> float:
    """P(fake) for one face computed here in numpy, from the same crop."""
    ref = next(f for f in read_index(frames_dir) if f.t == t)
    rgb = np.asarray(Image.open(ref.path).convert("RGB"))
    h, w = rgb.shape[:2]
    px = np.array(box) * [w, h, w, h]
    crop = (
        deepfake.crop_face(rgb, px, opts.face_margin, opts.input_size_px).astype(np.float64) / 255
    )
    x = ((crop - opts.mean) / opts.std).mean(axis=(0, 1))
    logits = W @ x + B
    e = np.exp(logits - logits.max())
    return float(e[1] / e.sum())


def test_deepfake_without_a_classifier_is_unavailable_but_counts_faces(people_frames: Path) -> None:
    result = deepfake.check(people_frames, deepfake.DeepfakeOptions(device="cpu"))
    assert result.status.status == "unavailable"
    assert result.status.reason == "no deepfake model configured"
    assert result.verdict is None and result.score is None
    assert all(f.score is None for fr in result.frames for f in fr.faces)
    assert result.faces_found >= 2
    assert {fr.t for fr in result.frames} == set(zidane_times(people_frames))
    assert len(result.tracks) == 2  # two men, each seen in both zidane frames
    assert all(tr.frames == 2 and tr.score is None for tr in result.tracks)
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["status"] == "unavailable" and doc["faces_found"] == result.faces_found


@pytest.mark.slow
def test_deepfake_scores_faces_end_to_end(people_frames: Path, tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx", W, B, 64)
    opts = deepfake.DeepfakeOptions(classifier=str(model), input_size_px=64, device="cpu")
    result = deepfake.check(people_frames, opts)
    assert result.status.ok and result.faces_found >= 2
    assert result.classifier == "tiny.onnx" and result.classifier_sha256
    faces = [(fr.t, f) for fr in result.frames for f in fr.faces]
    for t, face in faces:
        assert face.score is not None and 0.0 < face.score < 1.0
        assert face.score == pytest.approx(
            expected_score(people_frames, t, face.box, opts), abs=1e-4
        )
    for track in result.tracks:
        scores = [f.score for _, f in faces if f.track == track.track and f.score is not None]
        assert track.score == pytest.approx(sum(scores) / len(scores))  # top-3 mean of 2 frames
        assert track.max_score == max(scores)
    assert result.score == max(tr.score for tr in result.tracks if tr.score is not None)
    assert result.verdict == ("flagged" if result.score >= opts.threshold else "ok")

    score = result.score
    assert score is not None
    below = deepfake.check(people_frames, replace(opts, threshold=score - 0.01))
    above = deepfake.check(people_frames, replace(opts, threshold=score + 0.01))
    assert below.verdict == "flagged" and above.verdict == "ok"
    flipped = deepfake.check(people_frames, replace(opts, fake_index=0))
    flipped_scores = [f.score for fr in flipped.frames for f in fr.faces]
    original = [f.score for _, f in faces]
    assert flipped_scores == pytest.approx([1 - s for s in original if s is not None], abs=1e-5)


@pytest.mark.slow
def test_deepfake_handles_a_fixed_batch_model(people_frames: Path, tmp_path: Path) -> None:
    dynamic = tiny_classifier(tmp_path / "dyn.onnx", W, B, 64)
    fixed = tiny_classifier(tmp_path / "fixed.onnx", W, B, 64, batch=1)
    a = deepfake.check(
        people_frames, deepfake.DeepfakeOptions(classifier=str(dynamic), input_size_px=64)
    )
    b = deepfake.check(
        people_frames, deepfake.DeepfakeOptions(classifier=str(fixed), input_size_px=64)
    )
    one_at_a_time = deepfake.check(
        people_frames,
        deepfake.DeepfakeOptions(classifier=str(dynamic), input_size_px=64, batch_size=1),
    )
    assert a.score is not None
    assert b.score == pytest.approx(a.score) and one_at_a_time.score == pytest.approx(a.score)


def test_deepfake_no_faces_is_not_a_score(empty_frames: Path, tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx", W, B, 64)
    result = deepfake.check(
        empty_frames, deepfake.DeepfakeOptions(classifier=str(model), input_size_px=64)
    )
    assert result.status.ok and result.verdict == "no_faces"
    assert result.score is None and result.faces_found == 0 and result.tracks == ()


def test_deepfake_refuses_bad_configuration(people_frames: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        deepfake.check(people_frames, deepfake.DeepfakeOptions(classifier=str(tmp_path / "x.onnx")))
    model = tiny_classifier(tmp_path / "tiny.onnx", W, B, 64)
    with pytest.raises(ConfigError, match="fake_index"):
        deepfake.check(
            people_frames,
            deepfake.DeepfakeOptions(classifier=str(model), input_size_px=64, fake_index=2),
        )


def test_haar_fallback_finds_a_face(people_frames: Path) -> None:
    result = deepfake.check(people_frames, deepfake.DeepfakeOptions(face_detector="haar"))
    assert result.faces_found >= 1 and result.detector.startswith("haar:")


def test_centerface_decode_places_a_peak() -> None:
    heat = np.zeros((1, 1, 8, 8), np.float32)
    heat[0, 0, 3, 5] = 0.9  # row 3, column 5 of a stride-4 map
    heat[0, 0, 3, 6] = 0.6  # a weaker neighbour, suppressed by NMS
    scale = np.full((1, 2, 8, 8), np.log(2.0), np.float32)  # 8 px boxes
    offset = np.zeros((1, 2, 8, 8), np.float32)
    dets = deepfake.centerface_decode(heat, scale, offset, (32, 32), 0.5)
    assert dets.shape == (1, 5)
    np.testing.assert_allclose(dets[0], [18.0, 10.0, 26.0, 18.0, 0.9], atol=1e-5)


def test_link_tracks_follows_boxes_and_splits_on_gaps() -> None:
    a = np.array([[0.1, 0.1, 0.3, 0.3]], np.float32)
    b = np.array([[0.6, 0.1, 0.8, 0.3], [0.11, 0.1, 0.31, 0.3]], np.float32)
    ids = deepfake.link_tracks([(0.0, a), (1.0, b), (9.0, a)], max_gap_seconds=3.0)
    assert ids == [[0], [1, 0], [2]]


def test_crop_face_pads_past_the_edge() -> None:
    rgb = np.full((100, 200, 3), 255, np.uint8)
    crop = deepfake.crop_face(rgb, np.array([0.0, 0.0, 40.0, 40.0]), 0.25, 60)
    assert crop.shape == (60, 60, 3)
    assert crop[0, 0].tolist() == [0, 0, 0] and crop[-1, -1].tolist() == [255, 255, 255]
