"""Publish order and refusal, on real storage with a recorder around it."""

from __future__ import annotations

from pathlib import Path

import m3u8
import pytest

from tests.conftest import BUNNY
from vidpipe.encoders.encode import encode_ladder
from vidpipe.encoders.ladder import plan_ladder
from vidpipe.encoders.probe import probe
from vidpipe.encoders.publish import build_manifest, publish, withdraw_live
from vidpipe.infra.errors import AttemptVanished
from vidpipe.infra.ingest import ingest_file
from vidpipe.infra.ladders import load_ladder
from vidpipe.infra.settings import load_settings
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
        if key.endswith(".m3u8"):  # at the moment it lands, everything it names is whole
            playlist = m3u8.loads(data.decode())
            folder = key.rsplit("/", 1)[0]
            named = [s.uri for s in playlist.segments] + [p.uri for p in playlist.playlists]
            named += [m.uri for m in playlist.media if m.uri]
            for uri in named:
                assert self.exists(f"{folder}/{uri}"), f"{key} names {uri} before it is stored"
        super().put_bytes(key, data)


def test_master_is_written_last_and_only_when_whole(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path), encode={"preset": "ultrafast"})
    storage = RecordingStorage(tmp_path)
    src = ingest_file(BUNNY, storage)
    info = probe(BUNNY, settings.limits)
    plan = plan_ladder(info, load_ladder("default"), 60)
    result = encode_ladder(src, info, plan, settings, storage)
    assert not storage.exists(f"videos/{src.video_id}/master.m3u8")  # uploaded, not live

    # Lose one segment of the attempt: publish refuses and writes nothing.
    victim = tmp_path / "videos" / src.video_id / result.video[0].playlist
    (victim.parent / "seg_00001.m4s").unlink()
    storage.writes.clear()
    manifest = build_manifest(src, info, result, {}, {}, (), {})
    with pytest.raises(AttemptVanished, match="incomplete"):
        publish(storage, manifest, result, ())
    assert storage.writes == []

    fresh = encode_ladder(src, info, plan, settings, storage)
    assert fresh.attempt != result.attempt  # a retry writes under a fresh prefix
    storage.writes.clear()
    published = publish(storage, build_manifest(src, info, fresh, {}, {}, (), {}), fresh, ())
    assert published.changed
    assert storage.writes == [
        f"videos/{src.video_id}/manifest.json",
        f"videos/{src.video_id}/master.m3u8",
    ]
    storage.writes.clear()  # the same content again writes nothing
    assert not publish(storage, build_manifest(src, info, fresh, {}, {}, (), {}), fresh, ()).changed
    assert storage.writes == []
    assert not withdraw_live(storage, src.video_id)  # a VOD master is never withdrawn


def test_segments_go_up_while_encoding_and_an_event_master_plays_them(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path), encode={"preset": "ultrafast"})
    storage = RecordingStorage(tmp_path)
    src = ingest_file(BUNNY, storage)
    info = probe(BUNNY, settings.limits)
    plan = plan_ladder(info, load_ladder("default"), 60)
    result = encode_ladder(src, info, plan, settings, storage, write_master=True)
    master_key = f"videos/{src.video_id}/master.m3u8"
    first_master = storage.writes.index(master_key)
    base = f"videos/{src.video_id}/{result.attempt}/hls"
    # Before the master: every rendition's first segment and its EVENT playlist.
    before = storage.writes[:first_master]
    for name in plan.names:
        assert any(k.startswith(f"{base}/{name}/seg_") for k in before), name
        assert before.index(f"{base}/{name}/index.m3u8") > max(
            i for i, k in enumerate(before) if k.startswith(f"{base}/{name}/seg_")
        )
    # The master itself is EVENT until the publish step replaces it; with no manifest yet,
    # a failed ladder withdraws it.
    assert "#EXT-X-STREAM-INF" in (tmp_path / master_key).read_text()
    assert withdraw_live(storage, src.video_id)
    assert not storage.exists(master_key)
