"""Publish order and refusal, on real storage with a recorder around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BUNNY
from vidpipe.encoders.ladder import plan_ladder
from vidpipe.encoders.pipeline import publish, transcode_to_storage
from vidpipe.encoders.probe import probe
from vidpipe.infra.errors import PlaylistInvalid
from vidpipe.infra.ingest import ingest_file
from vidpipe.infra.settings import load_ladder, load_settings
from vidpipe.infra.storage import LocalStorage

pytestmark = pytest.mark.slow


class RecordingStorage(LocalStorage):
    """Real local storage that remembers the order of writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def put_file(self, key: str, path: Path) -> None:
        self.writes.append(key)
        super().put_file(key, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        super().put_bytes(key, data)


def test_master_is_written_last_and_only_when_whole(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path))
    storage = RecordingStorage(tmp_path)
    src = ingest_file(BUNNY, storage)
    info = probe(BUNNY, settings.limits)
    plan = plan_ladder(info, load_ladder("default"), 60)
    result = transcode_to_storage(src, info, plan, settings, storage)
    assert not storage.exists(f"videos/{src.video_id}/master.m3u8")  # uploaded, not live

    # Lose one segment of the attempt: publish refuses and writes nothing.
    victim = tmp_path / "videos" / src.video_id / result.video[0].playlist
    (victim.parent / "seg_00001.m4s").unlink()
    storage.writes.clear()
    with pytest.raises(PlaylistInvalid, match="incomplete"):
        publish(src, info, result, {}, storage)
    assert storage.writes == []

    fresh = transcode_to_storage(src, info, plan, settings, storage)
    assert fresh.attempt != result.attempt  # a retry writes under a fresh prefix
    storage.writes.clear()
    published = publish(src, info, fresh, {}, storage)
    assert published.changed
    assert storage.writes == [
        f"videos/{src.video_id}/manifest.json",
        f"videos/{src.video_id}/master.m3u8",
    ]
