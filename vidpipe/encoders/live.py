"""Publish the ladder while it encodes: segments go to storage as ffmpeg closes them.

ffmpeg writes each rendition's segments and its own EVENT playlist into the
attempt's scratch directory (segments and playlist renamed into place whole,
``-hls_flags temp_file``). A poller uploads every segment that ffmpeg's
playlist lists and that storage does not have yet, then uploads vidpipe's
EVENT playlist for that rendition naming exactly the segments already in
storage. So no playlist in storage ever names a segment that is not whole
there.

When every rendition has its first segment in storage, and the video has no
master yet, the poller writes an EVENT master pointing at them (targets stand
for the bandwidths it cannot measure yet): from that moment a player plays
the video from the start and keeps going while the rest encodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from vidpipe.encoders import hls
from vidpipe.encoders.ladder import LadderPlan
from vidpipe.encoders.transcode import OutputLayout
from vidpipe.infra.outputs import StoredFile, upload_file
from vidpipe.infra.storage import Storage


@dataclass
class _Progress:
    init: StoredFile | None = None
    segments: list[hls.Segment] = field(default_factory=list)
    files: list[StoredFile] = field(default_factory=list)


class LiveLadder:
    """Mirrors an attempt's HLS output into storage, segment by segment.

    ``base`` is ``videos/{id}``, ``prefix`` the attempt id. With
    ``write_master``, the first moment every rendition has a segment in
    storage, an EVENT master is written at ``{base}/master.m3u8``.
    """

    def __init__(
        self,
        storage: Storage,
        base: str,
        prefix: str,
        layout: OutputLayout,
        plan: LadderPlan,
        segment_seconds: int,
        maxrate_factor: float,
        write_master: bool,
    ) -> None:
        self.storage = storage
        self.base = base
        self.prefix = prefix
        self.layout = layout
        self.plan = plan
        self.segment_seconds = segment_seconds
        self.maxrate_factor = maxrate_factor
        self.write_master = write_master
        self.master_written = False
        self._done: dict[str, _Progress] = {name: _Progress() for name in plan.names}
        self._lock = threading.Lock()

    def key(self, name: str) -> str:
        """The rendition's playlist, relative to ``base``."""
        return f"{self.prefix}/hls/{name}/index.m3u8"

    @property
    def uploaded(self) -> tuple[StoredFile, ...]:
        """Every init and segment in storage so far."""
        out: list[StoredFile] = []
        for p in self._done.values():
            out += ([p.init] if p.init else []) + p.files
        return tuple(out)

    def poll(self) -> None:
        """Upload what ffmpeg finished since the last poll; safe to call from one thread."""
        with self._lock:
            for name, progress in self._done.items():
                self._mirror(name, progress)
            if self.write_master and not self.master_written and self._all_started():
                self._publish_master()

    def _mirror(self, name: str, progress: _Progress) -> None:
        path = self.layout.playlist(name)
        if not path.is_file():
            return
        written = hls.read_playlist(path)
        new = written.segments[len(progress.segments) :]
        if not new:
            return
        folder = f"{self.prefix}/hls/{name}"
        if written.init and progress.init is None:
            progress.init = upload_file(
                self.storage, path.parent / written.init, self.base, f"{folder}/{written.init}"
            )
        for seg in new:
            progress.files.append(
                upload_file(self.storage, path.parent / seg.uri, self.base, f"{folder}/{seg.uri}")
            )
            progress.segments.append(seg)
        text = hls.media_playlist(
            hls.Playlist(written.init, tuple(progress.segments)), self.segment_seconds, ended=False
        )
        self.storage.put_bytes(f"{self.base}/{self.key(name)}", text.encode())

    def _all_started(self) -> bool:
        return all(p.segments for p in self._done.values())

    def _publish_master(self) -> None:
        video = [self._planned(r.name, "video", r.video_bitrate_kbps, r.fps_float)
                 for r in self.plan.video]  # fmt: skip
        audio = (
            self._planned(self.plan.audio.name, "audio", self.plan.audio.bitrate_kbps, 0.0)
            if self.plan.audio
            else None
        )
        master = hls.master_playlist(video, audio)
        self.storage.put_bytes(f"{self.base}/master.m3u8", master.encode())
        self.master_written = True

    def _planned(self, name: str, kind: str, kbps: int, fps: float) -> hls.Rendition:
        progress = self._done[name]
        directory = self.layout.rendition_dir(name)
        playlist = hls.Playlist(progress.init.key.rsplit("/", 1)[1] if progress.init else None,
                                tuple(progress.segments[:1]))  # fmt: skip
        first = hls.measure(directory, playlist, name=name, kind=kind, key=self.key(name),
                            target_kbps=kbps, fps=fps)  # fmt: skip
        peak = round(kbps * 1000 * (self.maxrate_factor if kind == "video" else 1.0))
        return hls.planned(first, peak_bps=peak, average_bps=kbps * 1000)


class Poller:
    """Calls ``poll`` every ``interval_seconds`` on a thread until stopped."""

    def __init__(self, poll: Callable[[], None], interval_seconds: float) -> None:
        self._poll = poll
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vidpipe-live", daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._poll()
            except Exception as exc:  # a storage hiccup: keep the encode, retry next tick
                self._error = exc

    @property
    def error(self) -> BaseException | None:
        return self._error
