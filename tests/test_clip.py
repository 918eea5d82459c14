"""Image embeddings for visual search (CLIP family).

No package on the registries this project reaches ships CLIP-family weights
(``embed.IMAGE_WEIGHTS_SEARCHED``), so here both entry points must say
``unavailable`` with the reason, never return vectors of another model. The
quality test (a Big Buck Bunny meadow frame ranks above unrelated frames for
"a rabbit in a meadow") runs where ``VIDPIPE_CLIP_WEIGHTS`` points at an
open_clip checkpoint (``VIDPIPE_CLIP_MODEL``, default ViT-B-32) and open_clip
is installed; elsewhere it is skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_vision import frames_from_images
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.models.embed import (
    IMAGE_WEIGHTS_SEARCHED,
    EmbedOptions,
    embed_images,
    embed_query_for_images,
    image_model_unavailable,
)

REPO = Path(__file__).resolve().parent.parent
BBB = REPO / "samples" / "bigbuckbunny_720p_51.mp4"


def test_query_is_unavailable_without_weights_and_says_what_was_tried() -> None:
    q = embed_query_for_images("a rabbit in a meadow")
    assert q.status.status == "unavailable" and q.vector is None and q.model is None
    assert "no package on the registries ships CLIP-family weights" in q.status.reason
    assert len(IMAGE_WEIGHTS_SEARCHED) >= 5


def test_frames_and_query_agree_on_unavailability(tmp_path: Path) -> None:
    frames = frames_from_images(tmp_path / "frames", [Image.new("RGB", (64, 48), "green")])
    for options in (EmbedOptions(), EmbedOptions(image_weights=str(tmp_path / "nope.bin"))):
        reason = image_model_unavailable(options)
        assert reason is not None
        assert embed_query_for_images("x", options).status.reason == reason
    assert embed_images(frames).status.reason == image_model_unavailable(EmbedOptions())


def _bbb_frames(out: Path) -> Path:
    """Big Buck Bunny at 1 fps: the rabbit on the meadow fills the frames from 1 s on."""
    out.mkdir()
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(BBB), "-vf", "fps=1,scale=320:-2",
         str(out / "bbb_%02d.jpg")],
        check=True,
    )  # fmt: skip
    return out


def test_clip_ranks_the_rabbit_on_the_meadow_first(tmp_path: Path) -> None:
    weights = os.environ.get("VIDPIPE_CLIP_WEIGHTS", "")
    options = EmbedOptions(
        image_model=os.environ.get("VIDPIPE_CLIP_MODEL", "ViT-B-32"), image_weights=weights
    )
    reason = image_model_unavailable(options)
    if reason is not None:
        pytest.skip(f"image embeddings unavailable here: {reason}")
    bbb = sorted(_bbb_frames(tmp_path / "bbb").glob("*.jpg"))[1:3]
    others = [
        Image.new("RGB", (320, 180), "black"),
        Image.effect_noise((320, 180), 64).convert("RGB"),
        Image.new("RGB", (320, 180), (30, 60, 200)),
    ]
    images = [Image.open(p).convert("RGB") for p in bbb] + others
    frames = frames_from_images(tmp_path / "frames", images)
    result = embed_images(frames, options)
    query = embed_query_for_images("a rabbit in a meadow", options)
    assert result.status.ok and query.status.ok and query.vector is not None
    scores = np.array([f.vector for f in result.frames]) @ np.array(query.vector)
    assert int(np.argmax(scores)) < len(bbb)
    assert scores[: len(bbb)].min() > scores[len(bbb) :].max()
