"""Caption writers: WebVTT, SRT, transcript.json and the HLS subtitle playlist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import m3u8
import pytest
import webvtt

from vidpipe.encoders import captions
from vidpipe.infra.transcript import Segment, Transcript, Word

VTT_TIMING = re.compile(
    r"^(\d{2,}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2,}):(\d{2}):(\d{2})\.(\d{3})$"
)
SRT_TIMING = re.compile(r"^(\d{2,}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2,}):(\d{2}):(\d{2}),(\d{3})$")

SEGMENTS = (
    Segment(0.0, 2.5, " And so my fellow Americans,", -0.2, 0.01),
    Segment(2.5, 2.5, "ask not", -0.3, 0.02),  # zero length: must still end after it starts
    Segment(3.0, 4.0, "   ", -0.1, 0.9),  # empty: no cue
    Segment(4.2, 7.1234, "what <your> country & -->\nyou", -0.25, 0.03),
    Segment(3725.5, 3727.25, "an hour later", -0.4, 0.05),
)
N_CUES = 4


def ms(groups: tuple[str, ...]) -> tuple[int, int]:
    h1, m1, s1, f1, h2, m2, s2, f2 = map(int, groups)
    return (
        ((h1 * 60 + m1) * 60 + s1) * 1000 + f1,
        ((h2 * 60 + m2) * 60 + s2) * 1000 + f2,
    )


def timings(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    return [ms(m.groups()) for line in text.splitlines() if (m := pattern.match(line))]


def test_webvtt_header_cues_and_timestamps(tmp_path: Path) -> None:
    text = captions.to_webvtt(SEGMENTS)
    lines = text.splitlines()
    assert lines[0] == "WEBVTT"
    assert lines[1] == ""
    assert "X-TIMESTAMP-MAP" not in text
    times = timings(text, VTT_TIMING)
    assert len(times) == N_CUES
    assert all(end > start for start, end in times)
    assert times[0] == (0, 2500)
    assert times[1] == (2500, 2501)
    assert times[2] == (4200, 7123)
    assert times[3] == (3725500, 3727250)  # hours roll over: 01:02:05.500
    assert "01:02:05.500 --> 01:02:07.250" in text
    assert " --> " in text and "," not in "".join(line for line in lines if "-->" in line)

    path = tmp_path / "c.vtt"
    path.write_text(text)
    parsed = webvtt.read(str(path))
    assert len(parsed) == N_CUES
    assert [c.start for c in parsed.captions][:2] == ["00:00:00.000", "00:00:02.500"]
    assert parsed[0].text == "And so my fellow Americans,"
    assert all(c.end_in_seconds >= c.start_in_seconds for c in parsed.captions)
    third = parsed[2].raw_text
    assert "\n" not in third and "-->" not in third
    assert "&lt;your&gt;" in third and "&amp;" in third


def test_webvtt_with_timestamp_map(tmp_path: Path) -> None:
    text = captions.to_webvtt(SEGMENTS, mpegts_offset_90k=900000)
    lines = text.splitlines()
    assert lines[0] == "WEBVTT"
    assert lines[1] == "X-TIMESTAMP-MAP=MPEGTS:900000,LOCAL:00:00:00.000"
    assert lines[2] == ""
    parsed = webvtt.from_string(text)
    assert len(parsed) == N_CUES
    assert parsed.metadata == ["X-TIMESTAMP-MAP=MPEGTS:900000,LOCAL:00:00:00.000"]
    assert (
        captions.to_webvtt(SEGMENTS, mpegts_offset_90k=0)
        .splitlines()[1]
        .startswith("X-TIMESTAMP-MAP=MPEGTS:0,")
    )
    with pytest.raises(ValueError):
        captions.to_webvtt(SEGMENTS, mpegts_offset_90k=-1)
    with pytest.raises(ValueError):
        captions.timestamp_map(1 << 33)


def test_empty_transcript_is_a_valid_webvtt() -> None:
    text = captions.to_webvtt([])
    assert text.splitlines()[0] == "WEBVTT"
    assert len(webvtt.from_string(text)) == 0
    assert captions.to_srt([]) == ""


def test_srt_numbering_and_commas(tmp_path: Path) -> None:
    text = captions.to_srt(SEGMENTS)
    blocks = text.strip().split("\n\n")
    assert len(blocks) == N_CUES
    for number, block in enumerate(blocks, start=1):
        index, timing, body = block.split("\n")
        assert index == str(number)
        assert SRT_TIMING.match(timing), timing
        assert body.strip()
    times = timings(text, SRT_TIMING)
    assert times == timings(captions.to_webvtt(SEGMENTS), VTT_TIMING)
    path = tmp_path / "c.srt"
    path.write_text(text)
    parsed = webvtt.from_srt(str(path))
    assert len(parsed) == N_CUES
    assert parsed[2].raw_text == "what <your> country & -> you"  # SRT is plain text


def test_subtitle_playlist_parses() -> None:
    text = captions.subtitle_playlist("captions.vtt", 14.2)
    assert text.startswith("#EXTM3U\n")
    assert "#EXT-X-VERSION:3" in text
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    playlist = m3u8.loads(text)
    assert playlist.target_duration == 15
    assert playlist.playlist_type == "vod"
    assert playlist.is_endlist
    assert playlist.version == 3
    assert [s.uri for s in playlist.segments] == ["captions.vtt"]
    assert playlist.segments[0].duration == pytest.approx(14.2)
    assert m3u8.loads(captions.subtitle_playlist("a.vtt", 10.0)).target_duration == 10
    assert m3u8.loads(captions.subtitle_playlist("a.vtt", 0.0)).target_duration == 1
    with pytest.raises(ValueError):
        captions.subtitle_playlist("a.vtt", float("nan"))
    with pytest.raises(ValueError):
        captions.subtitle_playlist("a.vtt\n#EXT-X-ENDLIST", 3.0)


def _transcript(words: bool) -> Transcript:
    segment = Segment(
        1.0,
        2.0,
        "Hallo Welt",
        -0.2,
        0.01,
        (Word(1.0, 1.4, " Hallo", 0.9), Word(1.5, 2.0, " Welt", 0.8)) if words else (),
    )
    return Transcript("de", 0.93, (segment,), "faster-whisper", "base", 3.5, False)


def test_transcript_json() -> None:
    doc = json.loads(captions.to_transcript_json(_transcript(words=True)))
    assert doc["language"] == "de"
    assert doc["language_probability"] == pytest.approx(0.93)
    assert doc["engine"] == "faster-whisper" and doc["model"] == "base"
    (segment,) = doc["segments"]
    assert set(segment) == {"start", "end", "text", "avg_logprob", "no_speech_prob", "words"}
    assert segment["text"] == "Hallo Welt"
    assert segment["words"][1] == {"start": 1.5, "end": 2.0, "text": " Welt", "probability": 0.8}
    plain = captions.transcript_dict(_transcript(words=False))
    assert "words" not in plain["segments"][0]


def test_write_captions(tmp_path: Path) -> None:
    files = captions.write_captions(
        _transcript(words=False), tmp_path / "subs", mpegts_offset_90k=126000
    )
    assert files.vtt.read_text().splitlines()[1].startswith("X-TIMESTAMP-MAP=MPEGTS:126000,")
    assert files.srt.read_text().startswith("1\n00:00:01,000 --> 00:00:02,000\n")
    assert json.loads(files.transcript_json.read_text())["segments"][0]["text"] == "Hallo Welt"
    playlist = m3u8.load(str(files.playlist))
    assert [s.uri for s in playlist.segments] == [files.vtt.name]
    assert playlist.target_duration == 4
    assert sorted(p.name for p in files.vtt.parent.iterdir()) == sorted(
        ["captions.vtt", "captions.srt", "transcript.json", "captions.m3u8"]
    )


def test_captions_module_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, vidpipe.encoders.captions\n"
        "heavy = {'torch', 'whisper', 'faster_whisper', 'ctranslate2'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
