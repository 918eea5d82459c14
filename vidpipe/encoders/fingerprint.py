"""Perceptual fingerprints of the sampled frames, and duplicate matching between videos.

Each sampled frame gets a 64-bit DCT hash: grayscale, 32×32 (Lanczos),
2-D DCT-II, the top-left 8×8 block of low frequencies, one bit per
coefficient set when it is above the median of the 63 AC coefficients. The
DC bit (mean brightness, which says nothing about structure) is always 0.
Re-encoding, rescaling and mild colour changes move a hash by a few bits;
different pictures differ by about 32. Near-flat frames (black, white, one
colour) hash to noise and are marked ``flat``; matching ignores them.

``match`` finds the time offset between two fingerprints by voting: every
pair of frames within ``max_distance_bits`` of each other votes for
``t_b - t_a``. The best few offsets (and 0) are then scored: each frame is
paired with the other video's frames within ``tolerance`` of ``t + offset``,
and the score is the fraction of paired frames whose hashes are within
``max_distance_bits``, counted both ways so ``match(a, b)`` equals
``match(b, a)``. Trimming the start, re-encoding and resizing keep the score
near 1; unrelated videos score near 0. Pure numpy and Pillow, no model.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import Report, store_json
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.storage import Storage, local_folder

ALGORITHM = "dct64-ac-median/1"
_SIDE, _LOW = 32, 8
_FLAT_STDDEV = 4.0  # 32×32 luma standard deviation below which a frame has no structure


@dataclass(frozen=True)
class FrameHash:
    t: float  # seconds
    hash: int  # 64-bit DCT hash, bit 63 = coefficient (0, 0)
    flat: bool  # too uniform to hash meaningfully

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "hash": f"{self.hash:016x}", "flat": self.flat}


@dataclass(frozen=True)
class Fingerprint:
    """A video's fingerprint: one hash per sampled frame, in time order."""

    frames: tuple[FrameHash, ...]
    algorithm: str = ALGORITHM

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.fingerprint/1",
            "algorithm": self.algorithm,
            "usable_frames": sum(not f.flat for f in self.frames),
            "frames": [f.to_dict() for f in self.frames],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        frames = tuple(
            FrameHash(float(f["t"]), int(f["hash"], 16), bool(f["flat"])) for f in data["frames"]
        )
        return cls(frames, str(data.get("algorithm", ALGORITHM)))


@dataclass(frozen=True)
class MatchOptions:
    max_distance_bits: int = 10  # two frames "match" within this Hamming distance, 0..64
    threshold: float = 0.6  # score at or above which two videos are duplicates, 0..1
    max_offset_seconds: float = 60.0  # largest start trim searched, either way
    tolerance_seconds: float = 0.0  # pairing window around t + offset; 0 = half the interval
    min_compared: int = 3  # fewer paired frames than this is no evidence either way
    candidates: int = 5  # offsets scored, best voted first


@dataclass(frozen=True)
class MatchResult:
    is_duplicate: bool
    score: float  # fraction of paired frames that match, 0..1
    offset_seconds: float  # a frame at t in a shows at t + offset in b
    compared: int  # frame pairs scored (both directions)
    matched: int
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "is_duplicate": self.is_duplicate,
            "score": round(self.score, 4),
            "offset_seconds": round(self.offset_seconds, 3),
            "compared": self.compared,
            "matched": self.matched,
            "threshold": self.threshold,
        }


@cache
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as an ``n×n`` matrix: ``D @ x`` transforms a column."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


def image_hash(image: Image.Image) -> tuple[int, bool]:
    """The 64-bit DCT hash of one picture, and whether it is flat."""
    gray = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    px = np.asarray(gray, dtype=np.float64)
    d = _dct_matrix(_SIDE)
    low = (d @ px @ d.T)[:_LOW, :_LOW].ravel()
    bits = low > np.median(low[1:])
    bits[0] = False
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value, bool(px.std() < _FLAT_STDDEV)


def fingerprint(frames_dir: Path) -> Fingerprint:
    """Hash every sampled frame listed in ``frames_dir/index.json``.

    Raises ``FileNotFoundError`` when the index or a frame is missing and
    ``ValueError`` when the index is malformed.
    """
    rows = json.loads((frames_dir / "index.json").read_text())
    try:
        refs = sorted((float(r["t"]), str(r["file"])) for r in rows)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed frames index in {frames_dir}: {exc}") from exc
    out = []
    for t, name in refs:
        path = frames_dir / name
        if path.parent != frames_dir:
            raise ValueError(f"frames index names a file outside {frames_dir}: {name}")
        with Image.open(path) as img:
            value, flat = image_hash(img)
        out.append(FrameHash(t, value, flat))
    return Fingerprint(tuple(out))


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes."""
    return (a ^ b).bit_count()


_M1, _M2, _M4, _H01 = (
    np.uint64(0x5555555555555555),
    np.uint64(0x3333333333333333),
    np.uint64(0x0F0F0F0F0F0F0F0F),
    np.uint64(0x0101010101010101),
)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (SWAR; numpy < 2 has no bitwise_count)."""
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


def _usable(fp: Fingerprint) -> tuple[np.ndarray, np.ndarray]:
    frames = [f for f in fp.frames if not f.flat]
    return (
        np.array([f.t for f in frames], np.float64),
        np.array([f.hash for f in frames], np.uint64),
    )


def _interval(times: Sequence[float]) -> float:
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return statistics.median(gaps) if gaps else 1.0


def _score_offset(
    ta: np.ndarray, tb: np.ndarray, dist: np.ndarray, offset: float, tol: float, max_bits: int
) -> tuple[int, int]:
    """(compared, matched) pairing each frame of a with b's frames near ``t + offset``."""
    near = np.abs(tb[None, :] - (ta[:, None] + offset)) <= tol  # na×nb
    paired = near.any(axis=1)
    best = np.where(near, dist, 65).min(axis=1)
    return int(paired.sum()), int((best[paired] <= max_bits).sum())


def match(a: Fingerprint, b: Fingerprint, options: MatchOptions = MatchOptions()) -> MatchResult:
    """How much of ``a`` and ``b`` show the same pictures at a constant time offset."""
    ta, ha = _usable(a)
    tb, hb = _usable(b)
    none = MatchResult(False, 0.0, 0.0, 0, 0, options.threshold)
    if len(ta) == 0 or len(tb) == 0:
        return none
    dist = _popcount(ha[:, None] ^ hb[None, :]).astype(np.int64)  # na×nb
    tol = options.tolerance_seconds or 0.5 * min(
        _interval([f.t for f in a.frames]), _interval([f.t for f in b.frames])
    )
    tol += 1e-3  # timestamps are whole milliseconds
    ia, ib = np.nonzero(dist <= options.max_distance_bits)
    deltas = tb[ib] - ta[ia]
    deltas = deltas[np.abs(deltas) <= options.max_offset_seconds]
    offsets = [0.0]
    if len(deltas):
        bins = np.round(deltas / tol).astype(np.int64)
        values, counts = np.unique(bins, return_counts=True)
        for v in values[np.argsort(-counts, kind="stable")][: options.candidates]:
            offsets.append(float(np.median(deltas[bins == v])))
    best: tuple[int, float, MatchResult] | None = None
    for offset in offsets:
        c1, m1 = _score_offset(ta, tb, dist, offset, tol, options.max_distance_bits)
        c2, m2 = _score_offset(tb, ta, dist.T, -offset, tol, options.max_distance_bits)
        compared, matched = c1 + c2, m1 + m2
        if compared < options.min_compared:
            continue
        score = matched / compared
        result = MatchResult(
            score >= options.threshold, score, offset, compared, matched, options.threshold
        )
        # Rank by net agreement (matched minus mismatched pairs): a long overlap that
        # mostly matches beats a two-frame overlap that happens to match perfectly.
        rank = (2 * matched - compared, -abs(offset), result)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best else none


def fingerprint_stage(
    source: SourceRef, frames_index: str, storage: Storage, work_dir: Path, out: str
) -> Report[Fingerprint]:
    """Hash every sampled frame; the hashes stay in the result for near-duplicate matching."""
    base = f"videos/{source.video_id}"
    fp = fingerprint(local_folder(storage, f"{base}/{frames_index.rsplit('/', 1)[0]}"))
    with scratch_dir(work_dir / source.video_id, out.replace("/", "-")) as tmp:
        file = store_json(storage, base, f"{out}.json", fp.to_dict(), tmp)
    return Report(fp, file)
