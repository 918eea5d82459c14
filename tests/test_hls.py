"""Media and master playlist writers, codec strings and the validator's refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import m3u8
import pytest

from tests.conftest import Published, ffmpeg
from vidpipe.encoders import hls
from vidpipe.infra.errors import LimitExceeded, OutputInvalid


def mp(
    name: str,
    kind: str,
    codecs: str,
    sizes: list[int],
    w: int = 0,
    h: int = 0,
    durations: list[float] | None = None,
) -> hls.Rendition:
    """A rendition measured from made-up segments of ``sizes`` bytes, 4 s each."""
    durations = durations or [4.0] * len(sizes)
    segs = [
        hls.Segment(f"seg_{i:05d}.m4s", d, s)
        for i, (d, s) in enumerate(zip(durations, sizes, strict=True))
    ]
    peak = max(round(s.size_bytes * 8 / s.duration_seconds) for s in segs)
    avg = round(sum(s.size_bytes for s in segs) * 8 / sum(durations))
    return hls.Rendition(
        name,
        kind,
        f"hls/{name}/index.m3u8",
        codecs,
        w,
        h,
        25.0 if kind == "video" else 0.0,
        0,
        peak,
        avg,
        len(segs),
        sum(durations),
        sum(sizes),
        0,
    )


def test_master_attributes() -> None:
    video = [
        mp("avc_720p25_5000k", "video", "avc1.64001f", [2_500_000, 2_000_000], 1280, 720),
        mp("avc_240p25_500k", "video", "avc1.640015", [250_000, 200_000], 426, 240),
    ]
    audio = mp("aac_128k_2ch", "audio", "mp4a.40.2", [64_000, 64_000])
    text = hls.master_playlist(video, audio, "20261125T000000Z-abcdef")
    master = m3u8.loads(text)
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in text
    top = master.playlists[0]
    # Peak: 2.5 MB in 4 s = 5 Mbit/s, plus the audio's 128 kbit/s peak.
    assert top.stream_info.bandwidth == 5_000_000 + 128_000
    assert top.stream_info.average_bandwidth == 4_500_000 + 128_000
    assert top.stream_info.codecs == "avc1.64001f,mp4a.40.2"
    assert top.stream_info.resolution == (1280, 720)
    assert top.stream_info.frame_rate == 25.0
    assert top.stream_info.audio == "aud"
    assert top.uri == "20261125T000000Z-abcdef/hls/avc_720p25_5000k/index.m3u8"
    (group,) = master.media
    assert (group.type, group.group_id, group.default, group.autoselect) == (
        "AUDIO",
        "aud",
        "YES",
        "YES",
    )
    assert [p.stream_info.resolution[1] for p in master.playlists] == [720, 240]


def test_audio_only_master() -> None:
    audio = mp("aac_128k_2ch", "audio", "mp4a.40.2", [64_000])
    master = m3u8.loads(hls.master_playlist([], audio, "a"))
    assert master.media == [] or len(master.media) == 0
    assert master.playlists[0].stream_info.codecs == "mp4a.40.2"


def test_codec_strings() -> None:
    assert hls.avc_codec_string(bytes.fromhex("0164001fffe1")) == "avc1.64001f"
    annexb = bytes.fromhex("00000001 674d4028 aaaa".replace(" ", ""))
    assert hls.avc_codec_string(annexb) == "avc1.4d4028"
    with pytest.raises(OutputInvalid):
        hls.avc_codec_string(b"\x00\x00\x01\x65\x00\x00")
    assert hls.aac_codec_string(bytes.fromhex("1190")) == "mp4a.40.2"  # AAC-LC
    assert hls.aac_codec_string(bytes.fromhex("2b92")) == "mp4a.40.5"  # HE-AAC (SBR)


def test_attribute_quoting_refuses_quotes() -> None:
    with pytest.raises(ValueError):
        hls.master_playlist([mp("x", "video", 'avc1"', [1], 2, 2)], None, "a")


@pytest.fixture
def attempt_copy(published_bunny: Published, tmp_path: Path) -> tuple[Path, list[hls.Rendition]]:
    """A copy of the published bunny's attempt, and its video rungs measured from the copy."""
    attempt = published_bunny.manifest["ladder"]["attempt"]
    dst = tmp_path / attempt
    shutil.copytree(published_bunny.video_dir / attempt, dst)
    return dst, [measured(dst, r["name"]) for r in published_bunny.manifest["ladder"]["video"]]


def measured(root: Path, name: str, kind: str = "video") -> hls.Rendition:
    folder = root / "hls" / name
    return hls.measure(folder, hls.read_playlist(folder / "index.m3u8"), name=name, kind=kind,
                       key=f"hls/{name}/index.m3u8", target_kbps=0, fps=25.0)  # fmt: skip


def validate(root: Path, video: list[hls.Rendition], audio: hls.Rendition | None = None) -> float:
    return hls.validate_ladder(root, video, audio, limit_seconds=3600)


@pytest.mark.slow
def test_validator_accepts_real_output(attempt_copy: tuple[Path, list[hls.Rendition]]) -> None:
    root, video = attempt_copy
    assert validate(root, video, measured(root, "aac_128k_2ch", "audio")) == pytest.approx(5.28)


@pytest.mark.slow
def test_validator_refuses_missing_segment(attempt_copy: tuple[Path, list[hls.Rendition]]) -> None:
    root, video = attempt_copy
    (root / "hls" / video[1].name / "seg_00001.m4s").unlink()
    with pytest.raises(OutputInvalid, match=r"seg_00001\.m4s missing"):
        validate(root, video)


@pytest.mark.slow
def test_validator_refuses_wrong_duration_and_long_segments(
    attempt_copy: tuple[Path, list[hls.Rendition]],
) -> None:
    root, video = attempt_copy
    pl = root / video[1].playlist
    pl.write_text(pl.read_text().replace("#EXTINF:4,", "#EXTINF:6,"))
    with pytest.raises(OutputInvalid) as err:
        validate(root, video)
    assert "over TARGETDURATION" in str(err.value)
    assert "the top rung 5.280 s (tolerance: one frame, 0.040 s)" in str(err.value)
    assert "bug in vidpipe" in str(err.value)  # ours to fix, not the upload's


@pytest.mark.slow
def test_audio_must_end_with_the_video(attempt_copy: tuple[Path, list[hls.Rendition]]) -> None:
    root, video = attempt_copy
    audio = measured(root, "aac_128k_2ch", "audio")
    pl = root / audio.playlist
    text = pl.read_text()
    last = [line for line in text.splitlines() if line.startswith("#EXTINF:")][-1]
    pl.write_text(text.replace(last, "#EXTINF:0.5,"))
    with pytest.raises(OutputInvalid, match=r"two AAC frames and one video frame, 0\.083 s"):
        validate(root, video, audio)


@pytest.mark.slow
def test_streams_past_the_limit_are_the_uploads_fault(
    attempt_copy: tuple[Path, list[hls.Rendition]],
) -> None:
    root, video = attempt_copy
    with pytest.raises(LimitExceeded, match="run past the 3 s duration limit"):
        hls.validate_ladder(root, video, None, limit_seconds=3)


@pytest.mark.slow
def test_validator_refuses_absolute_uri(attempt_copy: tuple[Path, list[hls.Rendition]]) -> None:
    root, video = attempt_copy
    pl = root / video[0].playlist
    pl.write_text(pl.read_text().replace("seg_00000.m4s", "/etc/seg_00000.m4s"))
    with pytest.raises(OutputInvalid, match="is not relative"):
        validate(root, video)


@pytest.mark.slow
def test_validator_refuses_segment_not_starting_on_keyframe(tmp_path: Path) -> None:
    # split_by_time lets ffmpeg cut mid-GOP: exactly what vidpipe's GOP setup prevents.
    out = tmp_path / "hls" / "bad"
    out.mkdir(parents=True)
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=64x64:r=25:d=3", "-c:v", "libx264", "-g", "250",
        "-f", "hls", "-hls_time", "1", "-hls_flags", "split_by_time",
        "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
        "-hls_segment_filename", str(out / "seg_%05d.m4s"), str(out / "index.m3u8"),
    )  # fmt: skip
    rung = measured(tmp_path, "bad")
    assert rung.segments >= 2
    with pytest.raises(OutputInvalid, match=r"seg_00001\.m4s does not start on a keyframe"):
        validate(tmp_path, [rung])


@pytest.mark.slow
def test_validator_refuses_rungs_with_different_segment_counts(
    attempt_copy: tuple[Path, list[hls.Rendition]],
) -> None:
    root, video = attempt_copy
    pl = root / video[2].playlist
    head, _, _ = pl.read_text().partition("#EXTINF:1.28,")
    pl.write_text(head + "#EXT-X-ENDLIST\n")
    shrunk = measured(root, video[2].name)
    with pytest.raises(OutputInvalid, match="disagree on segment count"):
        validate(root, [video[0], shrunk])


def test_media_playlist_is_event_while_it_grows_and_vod_when_done() -> None:
    playlist = hls.Playlist("init_0.mp4", (hls.Segment("seg_00000.m4s", 4.0, 10),))
    live = m3u8.loads(hls.media_playlist(playlist, 4, ended=False))
    assert live.playlist_type == "event" and not live.is_endlist
    assert [s.uri for s in live.segments] == ["seg_00000.m4s"]
    assert live.segment_map[0].uri == "init_0.mp4"
    done = m3u8.loads(hls.media_playlist(playlist, 4, ended=True))
    assert done.playlist_type == "vod" and done.is_endlist and done.target_duration == 4


def test_master_subtitle_group_on_every_variant() -> None:
    video = [
        mp("avc_720p25_5000k", "video", "avc1.64001f", [2_500_000], 1280, 720),
        mp("avc_240p25_500k", "video", "avc1.640015", [250_000], 426, 240),
    ]
    audio = mp("aac_128k_2ch", "audio", "mp4a.40.2", [64_000])
    track = hls.SubtitleTrack("captions/x/en.m3u8", "en", "English (auto)")
    master = m3u8.loads(hls.master_playlist(video, audio, "a", subtitles=[track]))
    subs = [m for m in master.media if m.type == "SUBTITLES"]
    assert len(subs) == 1
    s = subs[0]
    assert (s.group_id, s.language, s.name, s.default, s.autoselect, s.uri) == (
        "subs",
        "en",
        "English (auto)",
        "YES",
        "YES",
        "a/captions/x/en.m3u8",
    )
    assert all(p.stream_info.subtitles == "subs" for p in master.playlists)
    # Without captions no variant names a SUBTITLES group.
    plain = m3u8.loads(hls.master_playlist(video, audio, "a"))
    assert all(p.stream_info.subtitles is None for p in plain.playlists)
