"""Text embeddings with the packaged MiniLM, offline; image embeddings only when configured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_vision import frames_from_images
from vidpipe.infra.errors import ConfigError
from vidpipe.models.embed import (
    EmbedOptions,
    embed_images,
    embed_text_items,
    embed_texts,
    model_info,
)


@pytest.mark.slow
def test_texts_embed_to_unit_384_vectors_that_mean_something() -> None:
    bus, transit, soup = (
        np.array(v)
        for v in embed_texts(
            ["a person on a bus", "people riding public transport", "a bowl of soup"]
        )
    )
    for v in (bus, transit, soup):
        assert v.shape == (384,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert bus @ transit > bus @ soup + 0.2
    assert embed_texts([]) == []


@pytest.mark.slow
def test_embeddings_are_deterministic_and_described() -> None:
    a = embed_texts(["person", "car"])
    b = embed_texts(["car", "person"])
    assert a[0] == pytest.approx(b[1], abs=1e-6) and a[1] == pytest.approx(b[0], abs=1e-6)
    info = model_info()
    assert info.dims == 384 and info.normalized
    assert info.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert Path(info.path, "model.safetensors").is_file()
    doc = json.loads(json.dumps(embed_text_items(["person"]).to_dict()))
    assert doc["model"]["dims"] == 384 and len(doc["items"][0]["vector"]) == 384


def test_image_embeddings_are_unavailable_unless_configured(tmp_path: Path) -> None:
    frames = frames_from_images(tmp_path / "frames", [Image.new("RGB", (64, 48), "red")])
    result = embed_images(frames)
    assert result.status.status == "unavailable"
    assert "no image embedding weights configured" in result.status.reason
    assert result.frames == () and result.video is None and result.frame_count == 1
    assert json.loads(json.dumps(result.to_dict()))["status"] == "unavailable"
    with pytest.raises(ConfigError, match="not found"):
        embed_images(frames, EmbedOptions(image_weights=str(tmp_path / "clip.bin")))


def test_configured_weights_without_open_clip_say_how_to_install(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    try:
        import open_clip  # noqa: F401

        pytest.skip("open_clip is installed here")
    except ImportError:
        pass
    frames = frames_from_images(tmp_path / "frames", [Image.new("RGB", (64, 48), "red")])
    weights = tmp_path / "clip.bin"
    weights.write_bytes(b"not really weights")
    result = embed_images(frames, EmbedOptions(image_weights=str(weights)))
    assert result.status.status == "unavailable" and "open_clip_torch" in result.status.reason
