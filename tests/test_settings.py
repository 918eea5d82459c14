"""One settings model: defaults, file, environment, flags; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidpipe.infra.errors import ConfigError
from vidpipe.infra.ladders import load_ladder
from vidpipe.infra.settings import load_settings, storage_overrides


def test_defaults_come_from_default_yaml() -> None:
    s = load_settings()
    assert s.encode.segment_seconds == 4 and s.encode.segment_format == "fmp4"
    assert s.encode.fps_cap == 60 and s.storage.kind == "local"
    assert [r.height for r in load_ladder(s.encode.ladder).video] == [1080, 720, 480, 360, 240]


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("encode:\n  preset: slow\n  segment_seconds: 6\n")
    assert load_settings(cfg).encode.preset == "slow"
    monkeypatch.setenv("VIDPIPE_ENCODE__PRESET", "fast")
    s = load_settings(cfg)
    assert (s.encode.preset, s.encode.segment_seconds) == ("fast", 6)  # env over file, merged
    assert load_settings(cfg, encode={"preset": "medium"}).encode.preset == "medium"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("encode:\n  segment_secs: 6\n", "did you mean 'segment_seconds'"),
        ("thumbnail: {}\n", "did you mean 'thumbnails'"),
        ("encode:\n  segment_seconds: 0\n", "encode.segment_seconds"),
        ("encode:\n  encoder: vp9\n", "encode.encoder"),
        ("storage:\n  kind: s3\n", "s3_bucket is empty"),
        ("- a list\n", "mapping"),
        ("encode: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, yaml_text: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg)


def test_unknown_env_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDPIPE_ENCODE__PRESETT", "fast")
    with pytest.raises(ConfigError, match="did you mean 'preset'"):
        load_settings()


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(Path("/nonexistent/vidpipe.yaml"))


def test_unknown_ladder_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="available: default, mobile"):
        load_ladder("ultra")


def test_out_option() -> None:
    assert storage_overrides("s3://bucket/some/prefix/") == {
        "kind": "s3",
        "s3_bucket": "bucket",
        "s3_prefix": "some/prefix",
    }
    assert storage_overrides("/tmp/x")["kind"] == "local"
    with pytest.raises(ConfigError, match="no bucket"):
        storage_overrides("s3://")
    with pytest.raises(ConfigError, match="only a directory"):
        storage_overrides("gs://bucket")


def test_a_models_options_take_every_field_its_section_shares() -> None:
    from vidpipe.infra.config import options_from
    from vidpipe.models.asr import AsrOptions
    from vidpipe.models.safety import SafetyOptions

    s = load_settings(safety={"threshold": 0.7, "combine": "either", "enabled": False},
                      transcribe={"language": "de", "beam_size": 2})  # fmt: skip
    safety = options_from(SafetyOptions, s.safety)
    assert (safety.threshold, safety.combine) == (0.7, "either")
    assert safety.nms_iou == SafetyOptions().nms_iou  # not in the section: the model's default
    asr = options_from(AsrOptions, s.transcribe)
    assert (asr.language, asr.beam_size, asr.model) == ("de", 2, s.transcribe.model)
    with pytest.raises(ConfigError, match="combine"):
        options_from(SafetyOptions, s.safety, combine="sometimes")
