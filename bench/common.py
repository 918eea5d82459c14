"""What every bench shares: timing with CPU and machine load, test clips, bare ffmpeg runs.

Wall time is ``time.perf_counter``; CPU time is user + sys of this process
and of every child it waited for (``getrusage``), so ffmpeg's work counts.
``others`` is the share of all CPUs that *other* processes used meanwhile
(``/proc/stat``): wall times taken on a busy machine are not comparable,
CPU times still are.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidpipe.infra.ffmpeg import ffmpeg_exe


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float
    others: float  # share of all CPUs other processes used meanwhile, 0..1
    value: Any = None  # what the timed function returned


def cpu_seconds() -> float:
    """User + sys of this process and every child it has waited for, so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, incl. steal)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], Any]) -> Sample:
    busy0, wall0, cpu0 = machine_busy_seconds(), time.perf_counter(), cpu_seconds()
    value = fn()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    busy = machine_busy_seconds() - busy0
    others = max(0.0, min(1.0, (busy - cpu) / (wall * (os.cpu_count() or 1)))) if wall else 0.0
    return Sample(wall, cpu, others, value)


def busy_warning(samples: Sequence[Sample], limit: float = 0.10) -> None:
    busy = [s.others for s in samples if s.others > limit]
    if busy:
        print(
            f"WARNING: in {len(busy)} of {len(samples)} runs other processes used over "
            f"{limit:.0%} of the CPUs (up to {max(busy):.0%}): those wall times are inflated"
        )


def bare_ffmpeg(argv: Sequence[str]) -> None:
    """Run one ffmpeg command to completion, quietly; stop the bench if it fails."""
    proc = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"ffmpeg failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")


def make_clip(
    path: Path,
    seconds: float,
    *,
    size: str = "1920x1080",
    rate: int = 30,
    speech: Path | None = None,
    tag: str = "",
) -> Path:
    """A testsrc2 clip (H.264 ultrafast crf 18 + AAC); with ``speech`` looped as its audio.

    ``tag`` goes into the file's metadata: clips with different tags have different bytes,
    and so different video ids (nothing cached between them).
    """
    audio = (
        ["-stream_loop", "-1", "-i", str(speech)]
        if speech
        else ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds:g}"]
    )
    bare_ffmpeg(
        [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds:g}",
            *audio, "-map", "0:v", "-map", "1:a", "-t", f"{seconds:g}",
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "192k", "-ac", "2", "-movflags", "+faststart",
            "-metadata", f"comment={tag}", str(path),
        ]
    )  # fmt: skip
    return path


SPEECH_TEXT = Path(__file__).resolve().parent / "speech.txt"


def speech(dest: Path) -> Path:
    """Three minutes of English that never repeats: espeak-ng reading ``speech.txt``.

    Not ``jfk.wav`` looped: one 11 s sentence three times in every 30 s window
    compresses so well that Whisper falls back through all six temperatures, which
    measures its repetition guard, not transcription (bench/README.md).
    """
    if not dest.is_file():
        try:
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(dest),
                            "-f", str(SPEECH_TEXT)], check=True, capture_output=True)  # fmt: skip
        except FileNotFoundError:
            raise SystemExit("this bench speaks with espeak-ng: apt-get install espeak-ng "
                             "(make test installs it)") from None  # fmt: skip
    return dest
