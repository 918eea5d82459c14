"""Captions end to end: Whisper on the transcode's audio, published in the HLS master."""

from __future__ import annotations

import json
import re

import jiwer
import m3u8
import pytest
import webvtt

from tests.conftest import JFK_REFERENCE, Media, Published, process_to
from tests.test_process import check_published

pytestmark = pytest.mark.slow


def normalise(text: str) -> str:
    return re.sub(r"[^a-z' ]+", " ", text.lower()).split().__str__()


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def test_jfk_captions_in_master(published_jfk: Published) -> None:
    master = check_published(published_jfk)
    subs = [m for m in master.media if m.type == "SUBTITLES"]
    assert len(subs) == 1
    track = subs[0]
    assert (track.language, track.default, track.autoselect, track.group_id) == (
        "en",
        "YES",
        "YES",
        "subs",
    )
    assert all(p.stream_info.subtitles == "subs" for p in master.playlists)

    playlist = m3u8.load(str(published_jfk.video_dir / track.uri))
    assert playlist.is_endlist and len(playlist.segments) == 1
    vtt_path = (published_jfk.video_dir / track.uri).parent / playlist.segments[0].uri
    text = vtt_path.read_text()
    assert text.startswith("WEBVTT")
    assert "X-TIMESTAMP-MAP" not in text  # fMP4 media starts at zero: no map needed
    cues = webvtt.read(str(vtt_path)).captions
    assert cues and all(c.start < c.end for c in cues)
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d", c.start) for c in cues)
    hypothesis = words(" ".join(c.text for c in cues))
    assert jiwer.wer(JFK_REFERENCE, hypothesis) <= 0.10, hypothesis

    captions = published_jfk.manifest["captions"]
    assert captions["status"] == "ok" and captions["language"] == "en"
    assert captions["language_probability"] > 0.5
    transcript = json.loads((published_jfk.video_dir / captions["transcript"]).read_text())
    seg = transcript["segments"][0]
    assert {"start", "end", "text", "avg_logprob", "no_speech_prob"} <= set(seg)
    srt = (published_jfk.video_dir / captions["srt"]).read_text()
    assert re.search(r"^1\n\d\d:\d\d:\d\d,\d\d\d --> ", srt, re.M)


def test_silence_gives_no_track_and_succeeds(media: Media, data_dir) -> None:  # type: ignore[no-untyped-def]
    pub = process_to(data_dir, media.silent)
    master = check_published(pub)
    assert not [m for m in master.media if m.type == "SUBTITLES"]
    assert all(p.stream_info.subtitles is None for p in master.playlists)
    captions = pub.manifest["captions"]
    assert captions["status"] == "no speech detected" and captions["segments"] == 0


def test_ts_segments_get_a_timestamp_map(media: Media, data_dir) -> None:  # type: ignore[no-untyped-def]
    pub = process_to(data_dir, media.jfk, "--segment-format", "ts")
    check_published(pub)
    vtt = (pub.video_dir / pub.manifest["captions"]["vtt"]).read_text()
    header = vtt.splitlines()[1]
    assert re.fullmatch(r"X-TIMESTAMP-MAP=MPEGTS:\d+,LOCAL:00:00:00\.000", header), header
    assert int(header.split("MPEGTS:")[1].split(",")[0]) > 0
