"""Benchmark the two Whisper engines side by side, in one run.

What it measures
----------------
jfk.wav (11 s, ``tests/data``) is decoded once with ``vidpipe.models.asr.load_audio``
so both engines get the same float32 samples. Each engine then runs
``vidpipe.models.asr.transcribe_samples`` with the same options:

- faster-whisper: the packaged multilingual base (CTranslate2), int8 on CPU;
- openai-whisper: the same weights converted to an openai-whisper checkpoint
  (``vidpipe.models.whisper_weights``), float32 on CPU;

with the same beam size (5), best-of (5), temperature fallback, thread count,
VAD setting and language detection. Model loading is done first and reported
separately; it is not in the RTF.

Real-time factor (RTF) = processing wall seconds / audio seconds (lower is
faster); speedup = openai-whisper RTF / faster-whisper RTF. Each round runs
both engines once, the order alternating, and the table reports medians. CPU
seconds (user + sys of this process, all threads) and the share of the CPUs
other processes used meanwhile ("others", /proc/stat; both from
``bench/common.py``'s ``timed``) are shown too: wall
times taken on a busy machine are inflated and not comparable; CPU times
still are. The WER of each transcript against the reference and the number
of decoding passes (1 = no temperature fallback) are printed as a check that
both engines did the same job.

Why one copy by default: ``--copies 3`` repeats jfk to ~33 s, but the same
sentence three times in one 30 s window compresses too well (gzip ratio
about 2.5 > Whisper's 2.4 threshold), so openai-whisper falls back through all
six temperatures (with best-of-5 sampling) and faster-whisper may not: the
ratio then measures Whisper's repetition guard, not the engines.

Target: speedup >= 3x on CPU, printed as a verdict, never an exit status.
The run fails (exit 1) when an engine's transcript is wrong: WER above
10 % against the reference (both engines get 0 % on jfk once).

Run (defaults: jfk once, 5 rounds, beam 5, threads = CPU count; about
1 minute on an idle 2-core machine)::

    .venv/bin/python bench/transcribe.py
    .venv/bin/python bench/transcribe.py --repeats 1 --beam-size 1 --threads 2
    .venv/bin/python bench/transcribe.py --json /tmp/transcribe.json
    .venv/bin/python bench/transcribe.py --smoke      # jfk once, 1 round: CI

The last line printed is always
``RESULT faster-whisper rtf=… openai-whisper rtf=… speedup=…x``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import Sample as Timing
from common import busy_warning, timed

from vidpipe.models import asr, whisper_weights

REPO = Path(__file__).resolve().parent.parent
JFK = REPO / "tests" / "data" / "jfk.wav"
JFK_TEXT = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
)
TARGET_SPEEDUP = 3.0
MAX_WER = 0.10  # above this an engine did not transcribe the clip: the run fails


@dataclass(frozen=True)
class Sample:
    wall_seconds: float
    cpu_seconds: float
    others: float  # share of all CPUs used by other processes meanwhile, 0..1
    wer: float
    passes: int  # decoding passes over 30 s windows; more than the windows = fallback


class _Passes:
    """Counts decoding passes by wrapping the engine's one decode entry point."""

    def __init__(self, loaded: asr.LoadedModel) -> None:
        self.count = 0
        if loaded.engine == "faster-whisper":
            # WhisperModel calls self.model.generate once per window and temperature
            inner = loaded.model.model
            counter = self

            class Proxy:
                def __getattr__(self, name: str) -> Any:
                    return getattr(inner, name)

                def generate(self, *args: Any, **kwargs: Any) -> Any:
                    counter.count += 1
                    return inner.generate(*args, **kwargs)

            loaded.model.model = Proxy()
        else:
            decode = loaded.model.decode  # whisper.transcribe calls model.decode per pass

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.count += 1
                return decode(*args, **kwargs)

            loaded.model.decode = counted


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "").split())


def _wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(_normalise(reference), _normalise(hypothesis)))


def _run(
    audio: np.ndarray, options: asr.AsrOptions, cache_dir: Path, reference: str, passes: _Passes
) -> Sample:
    before = passes.count
    t = timed(lambda: asr.transcribe_samples(audio, options, cache_dir=cache_dir))
    wer = _wer(reference, t.value.text)
    return Sample(t.wall, t.cpu, t.others, wer, passes.count - before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=1, help="jfk repeated, 0.5 s apart")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each runs both engines)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-vad", action="store_true", help="decode the silence too")
    parser.add_argument("--model", default="base", help="model option for both engines")
    parser.add_argument("--cache-dir", type=Path, default=whisper_weights.default_cache_dir())
    parser.add_argument("--smoke", action="store_true", help="jfk once, 1 round")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.copies, args.repeats = 1, 1

    one = asr.load_audio(JFK)
    copies = max(1, args.copies)
    gap = np.zeros(asr.SAMPLE_RATE_HZ // 2, dtype=np.float32)  # 0.5 s between repeats
    audio = np.concatenate([one, *([gap, one] * (copies - 1))])
    audio_seconds = audio.shape[0] / asr.SAMPLE_RATE_HZ
    reference = " ".join([JFK_TEXT] * copies)

    engines = {
        engine: asr.AsrOptions(
            engine=engine,  # type: ignore[arg-type]
            model=args.model,
            device="cpu",
            beam_size=args.beam_size,
            vad=not args.no_vad,
            threads=args.threads,
        )
        for engine in asr.ENGINES
    }
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(
        f"clip: jfk.wav x{copies} = {audio_seconds:.1f} s; beam {args.beam_size}, "
        f"threads {args.threads}, vad {'off' if args.no_vad else 'on'}, model {args.model!r}"
    )
    load_seconds: dict[str, float] = {}
    passes: dict[str, _Passes] = {}
    for engine, options in engines.items():
        t0 = time.perf_counter()
        loaded = asr.get_model(options, args.cache_dir)  # assembles / converts on first use
        load_seconds[engine] = time.perf_counter() - t0
        print(
            f"  {engine:<15} {loaded.compute_type:<8} load {load_seconds[engine]:5.1f} s  "
            f"{loaded.ref}"
        )
        passes[engine] = _Passes(loaded)
        asr.transcribe_samples(one[: asr.SAMPLE_RATE_HZ * 2], options, cache_dir=args.cache_dir)

    samples: dict[str, list[Sample]] = {engine: [] for engine in engines}
    for round_ in range(args.repeats):
        order = list(engines) if round_ % 2 == 0 else list(reversed(engines))
        for engine in order:
            samples[engine].append(
                _run(audio, engines[engine], args.cache_dir, reference, passes[engine])
            )

    print(
        f"\n{'engine':<15} {'rtf':>6} {'wall s':>7} {'cpu s':>7} {'others':>6} {'WER':>6} "
        f"{'passes':>6}"
    )
    rtf: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    for engine, runs in samples.items():
        wall = statistics.median(s.wall_seconds for s in runs)
        cpu = cpu_seconds[engine] = statistics.median(s.cpu_seconds for s in runs)
        rtf[engine] = wall / audio_seconds
        print(
            f"{engine:<15} {rtf[engine]:6.3f} {wall:7.2f} {cpu:7.2f} "
            f"{statistics.median(s.others for s in runs):6.0%} "
            f"{max(s.wer for s in runs):6.1%} {max(s.passes for s in runs):6d}"
        )
    busy_warning([Timing(s.wall_seconds, s.cpu_seconds, s.others) for r in samples.values()
                  for s in r])  # fmt: skip
    speedup = rtf["openai-whisper"] / rtf["faster-whisper"]
    cpu_ratio = cpu_seconds["openai-whisper"] / cpu_seconds["faster-whisper"]
    verdict = "PASS" if speedup >= TARGET_SPEEDUP else "FAIL"
    print(f"speedup (openai-whisper rtf / faster-whisper rtf): {speedup:.2f}x "
          f"(target >= {TARGET_SPEEDUP:g}x: {verdict})")  # fmt: skip
    print(f"cpu seconds ratio (openai-whisper / faster-whisper): {cpu_ratio:.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "audio_seconds": audio_seconds,
                    "beam_size": args.beam_size,
                    "threads": args.threads,
                    "vad": not args.no_vad,
                    "load_seconds": load_seconds,
                    "rtf": rtf,
                    "speedup": speedup,
                    "cpu_seconds": cpu_seconds,
                    "cpu_ratio": cpu_ratio,
                    "samples": {e: [asdict(s) for s in runs] for e, runs in samples.items()},
                },
                indent=2,
            )
        )
    wrong = [e for e, runs in samples.items() if max(s.wer for s in runs) > MAX_WER]
    for engine in wrong:
        print(f"FAIL: {engine} transcribed the clip wrong (WER above {MAX_WER:.0%})")
    print(
        f"RESULT faster-whisper rtf={rtf['faster-whisper']:.3f} "
        f"openai-whisper rtf={rtf['openai-whisper']:.3f} speedup={speedup:.2f}x"
    )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
