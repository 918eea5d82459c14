"""Speech to text with Whisper: one interface, two engines.

``faster-whisper`` (CTranslate2; int8 on CPU, float16 on CUDA) is the default;
``openai-whisper`` (PyTorch) is the reference implementation. Both get the same
16 kHz mono float32 samples, decoded here with PyAV, and the same decoding
settings (beam size, best-of 5, temperature fallback, thresholds), and return
the same ``Transcript``.

VAD: faster-whisper runs its own Silero VAD (``vad_filter``). For
openai-whisper the same steps are repeated here with faster-whisper's own
functions and defaults (``get_speech_timestamps`` with ``VadOptions()``,
``collect_chunks``, then timestamps mapped back with ``SpeechTimestampsMap``),
so both engines see the same speech-only audio and report times on the
original clock. The one difference: when VAD finds no speech at all,
faster-whisper still runs (and we discard) language detection on empty audio,
openai-whisper is not called.

Language: detected per file on the first 30 s (of speech, with VAD) unless
fixed. openai-whisper's ``transcribe`` does not return the probability, so
``model.detect_language`` is called here on exactly the window it would use,
and its answer is passed on; like faster-whisper, that costs one extra encoder
pass per file. English-only models report "en" with probability 1.

Audio without speech is an empty transcript with ``no_speech=True``, never an
error. Each model is loaded once per process; torch, whisper and
faster_whisper are imported only inside the functions that need them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidpipe.infra.errors import (
    ConfigError,
    InvalidMedia,
    TransientError,
    VidpipeError,
    import_failure,
)
from vidpipe.infra.transcript import Segment, Transcript, Word
from vidpipe.models import whisper_weights

SAMPLE_RATE_HZ = 16000
Engine = Literal["faster-whisper", "openai-whisper"]
Device = Literal["auto", "cpu", "cuda"]
ENGINES: tuple[str, ...] = ("faster-whisper", "openai-whisper")
# what to pip install when an engine is missing (both are vidpipe dependencies)
_REQUIREMENT = {
    "faster-whisper": "faster-whisper>=1.1",
    "openai-whisper": "openai-whisper>=20240930",
}
_OPENAI_COMPUTE = ("float32", "float16")
_BEST_OF = 5  # faster-whisper's default, passed to openai-whisper too


@dataclass(frozen=True)
class AsrOptions:
    """How to transcribe.

    engine: "faster-whisper" (default) or "openai-whisper" (reference).
    model: a path (CTranslate2 dir or openai-whisper .pt) or a name; "base" is
        the packaged multilingual base, "tiny.en" the packaged English tiny,
        other names are downloaded by the engine on a connected machine.
    language: ISO 639-1 code such as "en"; None detects it per file.
    device: "auto" picks CUDA when the engine can use it, else CPU.
    compute_type: "auto" is int8 on CPU / float16 on CUDA for faster-whisper and
        float32 / float16 for openai-whisper; otherwise a CTranslate2 compute
        type, or "float32" / "float16" for openai-whisper.
    beam_size: beams at temperature 0; the fallback temperatures sample best-of-5.
    vad: skip non-speech with Silero VAD before decoding (fewer hallucinations).
    word_timestamps: add per-word times (cross-attention alignment).
    threads: CPU threads for the engine; 0 keeps the engine's default. For
        openai-whisper this sets torch's process-wide thread count.
    """

    engine: Engine = "faster-whisper"
    model: str = "base"
    language: str | None = None
    device: Device = "auto"
    compute_type: str = "auto"
    beam_size: int = 5
    vad: bool = True
    word_timestamps: bool = False
    threads: int = 0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown ASR engine {self.engine!r}; choose one of {ENGINES}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; use auto, cpu or cuda")
        if not 1 <= self.beam_size <= 32:
            raise ConfigError(f"beam_size must be 1..32, not {self.beam_size}")
        if not 0 <= self.threads <= 256:
            raise ConfigError(f"threads must be 0..256, not {self.threads}")
        if not self.model:
            raise ConfigError("model must not be empty")
        if self.engine == "openai-whisper" and self.compute_type not in ("auto", *_OPENAI_COMPUTE):
            raise ConfigError(f"openai-whisper runs float32 or float16, not {self.compute_type!r}")


# ---------------------------------------------------------------- audio


def load_audio(path: Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """The first audio stream of ``path`` as mono float32 in [-1, 1] at ``sample_rate_hz``."""
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise InvalidMedia(f"{path.name}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate_hz)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as e:  # InvalidDataError, FileNotFoundError, ...
        raise InvalidMedia(f"{path.name}: cannot decode audio: {e}") from e
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class LoadedModel:
    """An engine's model object and what it was loaded as."""

    engine: str
    model: Any  # faster_whisper.WhisperModel or whisper.Whisper
    ref: str  # the path or name it was loaded from
    device: str  # "cpu" | "cuda"
    compute_type: str


_models: dict[tuple[str, str, str, str, int, str], LoadedModel] = {}
_models_lock = threading.Lock()


def _missing(engine: str, e: ImportError) -> VidpipeError:
    """Out of memory while importing is the machine's; a missing package the installation's."""
    return import_failure(
        f"the {engine} engine", e,
        f"pip install '{_REQUIREMENT[engine]}' (or reinstall vidpipe with its dependencies)",
    )  # fmt: skip


def resolve_device(engine: str, device: str) -> str:
    """``"cuda"`` or ``"cpu"``; "auto" is CUDA when the engine sees a GPU."""
    if device != "auto":
        return device
    try:
        if engine == "faster-whisper":
            import ctranslate2

            return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError as e:
        raise _missing(engine, e) from e


def resolve_compute_type(engine: str, device: str, compute_type: str) -> str:
    """The concrete compute type for ``engine`` on ``device`` ("cpu" or "cuda")."""
    if compute_type != "auto":
        return compute_type
    if engine == "faster-whisper":
        return "float16" if device == "cuda" else "int8"
    return "float16" if device == "cuda" else "float32"


def get_model(options: AsrOptions, cache_dir: Path | None = None) -> LoadedModel:
    """The model for ``options``, loaded on first use and kept for the process.

    Keyed on engine, model, device, compute type, threads and ``cache_dir``
    (where packaged weights are assembled and converted; default
    ``whisper_weights.default_cache_dir()``).
    """
    device = resolve_device(options.engine, options.device)
    compute = resolve_compute_type(options.engine, device, options.compute_type)
    key = (options.engine, options.model, device, compute, options.threads, str(cache_dir))
    with _models_lock:
        loaded = _models.get(key)
        if loaded is None:
            if options.engine == "faster-whisper":
                loaded = _load_faster(options, device, compute, cache_dir)
            else:
                loaded = _load_openai(options, device, compute, cache_dir)
            _models[key] = loaded
    return loaded


def clear_model_cache() -> None:
    """Forget every loaded model (tests; freeing GPU memory between stages)."""
    with _models_lock:
        _models.clear()


def _load_faster(
    options: AsrOptions, device: str, compute: str, cache_dir: Path | None
) -> LoadedModel:
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise _missing(options.engine, e) from e
    resolved = whisper_weights.resolve_ct2(options.model, cache_dir)
    try:
        model = WhisperModel(
            resolved.ref, device=device, compute_type=compute, cpu_threads=options.threads
        )
    except ValueError as e:  # bad compute type for this device
        raise ConfigError(f"faster-whisper cannot load {resolved.ref!r}: {e}") from e
    except Exception as e:
        if resolved.local:
            raise ConfigError(f"faster-whisper cannot load {resolved.ref!r}: {e}") from e
        raise TransientError(
            f"model {options.model!r} is not packaged here and could not be downloaded: {e}"
        ) from e
    return LoadedModel(options.engine, model, resolved.ref, device, compute)


def _load_openai(
    options: AsrOptions, device: str, compute: str, cache_dir: Path | None
) -> LoadedModel:
    try:
        import torch
        import whisper
        from whisper.model import ModelDimensions, Whisper
    except ImportError as e:
        raise _missing(options.engine, e) from e
    if options.threads:
        torch.set_num_threads(options.threads)
    resolved = whisper_weights.resolve_openai(options.model, cache_dir)
    if not resolved.local:
        try:
            model = whisper.load_model(resolved.ref, device=device)
        except Exception as e:
            raise TransientError(
                f"model {options.model!r} is not packaged here and could not be downloaded: {e}"
            ) from e
        return LoadedModel(options.engine, model, resolved.ref, device, compute)
    checkpoint = torch.load(resolved.ref, map_location="cpu", weights_only=True)
    model = Whisper(ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    heads = checkpoint.get("alignment_heads")
    if heads:  # converted checkpoints carry the CTranslate2 config's heads
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    model = model.to(device).eval()
    return LoadedModel(options.engine, model, resolved.ref, device, compute)


# ---------------------------------------------------------------- transcription


def transcribe(
    audio_path: Path, options: AsrOptions, *, cache_dir: Path | None = None
) -> Transcript:
    """Transcribe the first audio stream of ``audio_path`` (any format PyAV reads).

    Raises ``InvalidMedia`` if the file has no decodable audio and
    ``ConfigError`` for a bad model or a missing engine; silence is not an error.
    """
    return transcribe_samples(load_audio(audio_path), options, cache_dir=cache_dir)


def transcribe_samples(
    audio: np.ndarray, options: AsrOptions, *, cache_dir: Path | None = None
) -> Transcript:
    """Transcribe 16 kHz mono float32 samples (see ``transcribe``)."""
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    duration = audio.shape[0] / SAMPLE_RATE_HZ
    loaded = get_model(options, cache_dir)
    if audio.shape[0] == 0:
        return _silent(options, duration)
    if loaded.engine == "faster-whisper":
        language, probability, raw = _run_faster(loaded, audio, options)
    else:
        language, probability, raw = _run_openai(loaded, audio, options)
    segments = _clean(raw, duration)
    if not segments:
        return _silent(options, duration)
    return Transcript(
        language, probability, segments, options.engine, options.model, duration, False
    )


def _silent(options: AsrOptions, duration: float) -> Transcript:
    fixed = options.language is not None
    return Transcript(
        options.language, 1.0 if fixed else 0.0, (), options.engine, options.model, duration, True
    )


def _clean(segments: Iterable[Segment], duration: float) -> tuple[Segment, ...]:
    """Drop empty segments; keep times inside the audio and in order."""
    out: list[Segment] = []
    for s in segments:
        text = s.text.strip()
        if not text:
            continue
        start = round(min(max(s.start, 0.0), duration), 3)
        end = round(min(max(s.end, start), duration), 3)
        out.append(replace(s, start=start, end=end, text=text))
    return tuple(out)


def _run_faster(
    loaded: LoadedModel, audio: np.ndarray, options: AsrOptions
) -> tuple[str, float, list[Segment]]:
    raw, info = loaded.model.transcribe(
        audio,
        language=options.language,
        task="transcribe",
        beam_size=options.beam_size,
        best_of=_BEST_OF,
        vad_filter=options.vad,
        word_timestamps=options.word_timestamps,
        condition_on_previous_text=True,
    )
    segments = [
        Segment(
            float(s.start),
            float(s.end),
            s.text,
            float(s.avg_logprob),
            float(s.no_speech_prob),
            tuple(
                Word(float(w.start), float(w.end), w.word, float(w.probability))
                for w in (s.words or ())
            ),
        )
        for s in raw  # a generator: decoding happens here
    ]
    return str(info.language), float(info.language_probability), segments


def _speech_chunks(audio: np.ndarray) -> list[dict[str, int]]:
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError as e:
        raise ConfigError(
            "vad=True with openai-whisper uses faster-whisper's Silero VAD: "
            f"pip install '{_REQUIREMENT['faster-whisper']}'"
        ) from e
    chunks: list[dict[str, int]] = get_speech_timestamps(audio, VadOptions(), SAMPLE_RATE_HZ)
    return chunks


def _run_openai(
    loaded: LoadedModel, audio: np.ndarray, options: AsrOptions
) -> tuple[str, float, list[Segment]]:
    import torch
    import whisper

    model = loaded.model
    chunks: list[dict[str, int]] = []
    if options.vad:
        chunks = _speech_chunks(audio)
        if not chunks:
            return options.language or "", 0.0, []
        audio = np.concatenate([audio[c["start"] : c["end"]] for c in chunks])
    fp16 = loaded.compute_type == "float16"
    language, probability = options.language, 1.0
    if language is None and not model.is_multilingual:
        language = "en"
    elif language is None:
        # as whisper.transcribe does: the first 30 s of a mel padded with 30 s of silence
        mel = whisper.log_mel_spectrogram(audio, model.dims.n_mels, padding=whisper.audio.N_SAMPLES)
        window = whisper.pad_or_trim(mel, whisper.audio.N_FRAMES).to(model.device)
        with torch.no_grad():
            _, probs = model.detect_language(window.half() if fp16 else window)
        language, probability = max(probs.items(), key=lambda kv: kv[1])
    result = model.transcribe(
        audio,
        language=language,
        task="transcribe",
        beam_size=options.beam_size,
        best_of=_BEST_OF,
        word_timestamps=options.word_timestamps,
        condition_on_previous_text=True,
        fp16=fp16,
        verbose=None,  # no progress bar, no printing
    )
    segments = [
        Segment(
            float(s["start"]),
            float(s["end"]),
            s["text"],
            float(s["avg_logprob"]),
            float(s["no_speech_prob"]),
            tuple(
                Word(float(w["start"]), float(w["end"]), w["word"], float(w["probability"]))
                for w in s.get("words", ())
            ),
        )
        for s in result["segments"]
    ]
    if chunks:
        segments = _restore_times(segments, chunks)
    return str(language), float(probability), segments


def _restore_times(segments: Sequence[Segment], chunks: list[dict[str, int]]) -> list[Segment]:
    """Map times in the speech-only audio back to the original, as faster-whisper does."""
    from faster_whisper.vad import SpeechTimestampsMap

    ts_map = SpeechTimestampsMap(chunks, SAMPLE_RATE_HZ)
    out: list[Segment] = []
    for s in segments:
        if s.words:
            words = []
            for w in s.words:  # both ends of a word resolve in the chunk holding its middle
                index = ts_map.get_chunk_index((w.start + w.end) / 2)
                words.append(
                    replace(
                        w,
                        start=ts_map.get_original_time(w.start, index),
                        end=ts_map.get_original_time(w.end, index),
                    )
                )
            out.append(replace(s, start=words[0].start, end=words[-1].end, words=tuple(words)))
        else:
            out.append(
                replace(
                    s,
                    start=ts_map.get_original_time(s.start),
                    end=ts_map.get_original_time(s.end, is_end=True),
                )
            )
    return out
