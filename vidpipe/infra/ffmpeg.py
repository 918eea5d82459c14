"""Where the ffmpeg binary comes from.

The imageio-ffmpeg wheel ships a static ffmpeg (libx264, NVENC, libvmaf), so
no system package is needed. ``IMAGEIO_FFMPEG_EXE`` points at another build.
"""

from __future__ import annotations

from functools import cache


@cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())
