"""Poster choice and storyboard sprites from frames the transcode already decoded.

The transcode's ffmpeg writes small storyboard tiles and full-size poster
candidates as by-products of its one decode; this module only scores and
assembles JPEGs, it never decodes the source.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import webvtt
from PIL import Image, ImageStat

_DARK_MEAN, _BRIGHT_MEAN, _FLAT_STDDEV = 24.0, 235.0, 12.0


@dataclass(frozen=True)
class FrameScore:
    path: Path
    mean: float  # luma, 0..255
    stddev: float
    entropy: float  # bits, 0..8

    @property
    def blank(self) -> bool:
        return self.mean < _DARK_MEAN or self.mean > _BRIGHT_MEAN or self.stddev < _FLAT_STDDEV


def score_frame(path: Path) -> FrameScore:
    with Image.open(path) as img:
        gray = img.convert("L")
        stat = ImageStat.Stat(gray)
        hist = gray.histogram()
    total = sum(hist) or 1
    entropy = -sum((c / total) * math.log2(c / total) for c in hist if c)
    return FrameScore(path, stat.mean[0], stat.stddev[0], entropy)


def pick_poster(candidates: list[Path]) -> tuple[FrameScore, bool]:
    """The most detailed candidate that is neither black, white nor flat.

    Returns the score and whether a non-blank frame was found (a video that is
    black all through has no good poster; the caller records that).
    """
    if not candidates:
        raise ValueError("no poster candidates were written")
    scores = [score_frame(p) for p in candidates]
    usable = [s for s in scores if not s.blank]
    if usable:
        return max(usable, key=lambda s: s.entropy), True
    return max(scores, key=lambda s: (s.stddev, s.mean)), False


@dataclass(frozen=True)
class Storyboard:
    vtt: str  # path of the WebVTT track, relative to where it was written
    sprites: tuple[str, ...]  # sprite sheets, relative likewise
    tile_width: int
    tile_height: int
    tiles: int
    interval_seconds: float

    def under(self, prefix: str) -> Storyboard:
        """The same storyboard with ``prefix/`` in front of every path."""
        return replace(
            self, vtt=f"{prefix}/{self.vtt}", sprites=tuple(f"{prefix}/{s}" for s in self.sprites)
        )


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def build_storyboard(
    tiles: list[Path],
    out_dir: Path,
    *,
    columns: int,
    rows: int,
    interval_seconds: float,
    duration_seconds: float,
) -> Storyboard:
    """Pack tiles into ``storyboard_NNN.jpg`` sheets and write ``storyboard.vtt``.

    Cue ``i`` covers ``[i * interval, (i + 1) * interval)``, the last one ends
    at the video's end, and its text points at the tile with ``#xywh=``.
    """
    if not tiles:
        raise ValueError("no storyboard tiles were written")
    out_dir.mkdir(parents=True, exist_ok=True)
    with Image.open(tiles[0]) as first:
        tile_w, tile_h = first.size
    per_sheet = columns * rows
    sprites: list[Path] = []
    vtt = webvtt.WebVTT()
    count = 0
    for sheet_index in range(math.ceil(len(tiles) / per_sheet)):
        chunk = tiles[sheet_index * per_sheet : (sheet_index + 1) * per_sheet]
        used_rows = math.ceil(len(chunk) / columns)
        sheet = Image.new("RGB", (tile_w * min(columns, len(chunk)), tile_h * used_rows))
        name = f"storyboard_{sheet_index:03d}.jpg"
        for i, tile_path in enumerate(chunk):
            x, y = (i % columns) * tile_w, (i // columns) * tile_h
            with Image.open(tile_path) as tile:
                sheet.paste(tile.convert("RGB"), (x, y))
            start = count * interval_seconds
            if start >= duration_seconds:
                break
            end = min(start + interval_seconds, duration_seconds)
            if sheet_index * per_sheet + i == len(tiles) - 1:
                end = duration_seconds
            vtt.captions.append(
                webvtt.Caption(
                    _timestamp(start), _timestamp(end), f"{name}#xywh={x},{y},{tile_w},{tile_h}"
                )
            )
            count += 1
        path = out_dir / name
        sheet.save(path, "JPEG", quality=80, optimize=True)
        sprites.append(path)
    vtt_path = out_dir / "storyboard.vtt"
    vtt.save(str(vtt_path))
    names = tuple(p.name for p in sprites)
    return Storyboard(vtt_path.name, names, tile_w, tile_h, count, interval_seconds)


def save_poster(choice: FrameScore, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(choice.path, dest)
    return dest
