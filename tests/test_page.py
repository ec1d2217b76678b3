"""The test page at GET /: served from package data, and used in a real browser against a live
server with the real model (headless Chromium driven by Playwright): it streams, so text and
segments appear as they are decoded."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
import srt

from tests.conftest import API_KEY, API_VERSION
from tests.support.browser import chromium
from tests.support.speech import JAPANESE_SENTENCES, concatenate, encode, japanese_speech
from whisper_api.page import STATIC_DIRECTORY

MODEL_SECONDS = 180_000  # milliseconds Playwright waits for a transcription on a busy 2-core CPU


def test_page_and_its_files_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    for asset in ("/page/page.js", "/page/page.css"):
        assert asset in html
        assert client.get(asset).status_code == 200
    assert client.get("/page/../config.py").status_code == 404
    assert client.get("/page/index.html").status_code == 404


def test_page_needs_nothing_from_outside_the_server():
    for path in STATIC_DIRECTORY.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", path.read_text(encoding="utf-8")), path.name


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def open_page(browser, live_server):
    """Open the page in a fresh context (locale chosen per test); fails the test on script errors."""
    contexts, problems = [], []

    def open_with(locale: str = "en-US", url: str = live_server):
        context = browser.new_context(locale=locale, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.goto(url)
        page.wait_for_function("() => document.querySelectorAll('#deployment option').length > 0")
        page.fill("#api-key", API_KEY)
        return page

    yield open_with, problems
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def meeting_clip(tmp_path_factory):
    samples, spans = concatenate(*(japanese_speech(sentence) for sentence in JAPANESE_SENTENCES[:3]), gap_seconds=1.5)
    path = tmp_path_factory.mktemp("page") / "会議.wav"
    path.write_bytes(encode(samples, "wav"))
    return path, spans


def test_page_transcribes_a_clip_and_plays_from_a_clicked_segment_and_downloads_srt(open_page, engine, meeting_clip, tmp_path):
    open_with, problems = open_page
    path, spans = meeting_clip
    page = open_with("en-US")
    page.set_input_files("#audio-file", str(path))
    page.select_option("#language", "ja")
    page.check("#word-timestamps")
    with engine.queue.turn():  # someone else's job holds the model: the page shows it waits
        page.click("#send")
        page.wait_for_function("() => document.getElementById('run-status').textContent.includes('Waiting for the model')")
    page.wait_for_selector("#segments li", timeout=MODEL_SECONDS)
    assert "Done" in page.text_content("#run-status")
    starts = page.eval_on_selector_all("#segments li", "items => items.map(item => Number(item.dataset.start))")
    assert len(starts) >= 2

    last = page.locator("#segments li").last
    last.click()
    position = page.evaluate("document.getElementById('player').currentTime")
    assert starts[-1] - 0.05 <= position < starts[-1] + 1.0
    page.wait_for_function("() => document.querySelector('#segments li:last-child').classList.contains('playing')")
    # it plays on from there: the word being spoken is highlighted too
    page.wait_for_function("() => document.querySelector('#segments li:last-child .word.playing') !== null")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("a[data-format=srt]")
    download = download_info.value
    assert download.suggested_filename == "会議.srt"
    subtitles = list(srt.parse(open(download.path(), encoding="utf-8").read()))
    assert [round(subtitle.start.total_seconds(), 2) for subtitle in subtitles] == pytest.approx(starts, abs=0.011)
    assert all(subtitle.content.strip() for subtitle in subtitles)
    events = [json.loads(line) for line in page.text_content("#raw").splitlines()]
    assert [event["start"] for event in events if event["type"] == "transcript.text.segment"] == starts
    assert events[-1]["type"] == "transcript.text.done"
    assert page.text_content("#transcript-text") == events[-1]["text"]
    assert problems == []


@pytest.fixture(scope="module")
def one_chunk_a_batch(live_server_with, engine) -> str:
    return live_server_with(engine.with_settings(batch_size=1, vad_max_chunk_seconds=6), max_queue=2)


def test_text_and_segments_appear_while_the_rest_is_decoded(open_page, one_chunk_a_batch, engine, meeting_clip,
                                                            monkeypatch):
    real_decode = engine.decoder.submit_rows  # each batch's first pass

    def slow(*arguments, **keywords):  # time to look at the page between batches
        time.sleep(1.5)
        return real_decode(*arguments, **keywords)

    monkeypatch.setattr(engine.decoder, "submit_rows", slow)
    open_with, problems = open_page
    page = open_with("en-US", one_chunk_a_batch)
    page.set_input_files("#audio-file", str(meeting_clip[0]))
    page.select_option("#language", "ja")
    page.click("#send")
    page.wait_for_function(
        "() => document.getElementById('transcript-text').textContent.length > 0"
        " && document.querySelectorAll('#segments li').length >= 1", timeout=MODEL_SECONDS)
    early_segments = page.locator("#segments li").count()
    assert page.is_disabled("#send"), "the text appeared only once the whole transcription was done"
    assert "Done" not in page.text_content("#run-status")
    page.wait_for_function("() => document.getElementById('run-status').textContent.includes('Done')",
                           timeout=MODEL_SECONDS)
    assert page.locator("#segments li").count() > early_segments
    assert problems == []


@pytest.mark.parametrize("response_format", ["srt", "vtt"])
def test_subtitle_formats_show_their_text(open_page, meeting_clip, response_format):
    open_with, problems = open_page
    page = open_with("en-US")
    page.set_input_files("#audio-file", str(meeting_clip[0]))
    page.select_option("#language", "ja")
    page.select_option("#response-format", response_format)
    page.click("#send")
    page.wait_for_function("() => document.getElementById('run-status').textContent.includes('Done')",
                           timeout=MODEL_SECONDS)
    text = page.text_content("#transcript-text")
    assert text.strip() and "-->" not in text and "WEBVTT" not in text
    assert len(text.strip().splitlines()) >= 2  # one cue a line
    with page.expect_download() as download_info:
        page.click(f"a[data-format={response_format}]")
    assert " --> " in open(download_info.value.path(), encoding="utf-8").read()
    assert problems == []


def test_a_failed_request_clears_the_previous_result(open_page, meeting_clip):
    open_with, _ = open_page
    page = open_with("en-US")
    page.set_input_files("#audio-file", str(meeting_clip[0]))
    page.select_option("#language", "ja")
    page.select_option("#response-format", "json")
    page.click("#send")
    page.wait_for_function("() => document.getElementById('run-status').textContent.includes('Done')",
                           timeout=MODEL_SECONDS)
    assert page.text_content("#transcript-text").strip()
    page.fill("#api-key", "not-the-key")
    page.click("#send")
    page.wait_for_selector("#error:not([hidden])")
    assert page.is_hidden("#result")
    assert page.text_content("#transcript-text") == ""
    assert page.evaluate("document.getElementById('player').getAttribute('src')") is None


def test_page_shows_429_with_retry_after_in_japanese(open_page, engine, meeting_clip, monkeypatch):
    open_with, problems = open_page
    page = open_with("ja-JP")
    assert page.text_content("#send") == "送信"
    page.set_input_files("#audio-file", str(meeting_clip[0]))
    monkeypatch.setattr(engine.queue, "max_waiting", 0)
    with engine.queue.turn():  # busy, and no one may wait
        page.click("#send")
        page.wait_for_selector("#error:not([hidden])")
    message = page.text_content("#error")
    assert message.startswith("429: ") and "exceeded" in message
    assert re.search(r"再試行まで \d+ 秒", message)
    assert "失敗" in page.text_content("#run-status")
    assert [problem for problem in problems if "429" not in problem] == []


def test_page_shows_the_envelope_message_for_a_wrong_key(open_page, meeting_clip):
    open_with, _ = open_page
    page = open_with("en-US")
    page.fill("#api-key", "not-the-key")
    page.set_input_files("#audio-file", str(meeting_clip[0]))
    page.click("#send")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error").startswith("401: Access denied")
    assert page.evaluate("sessionStorage.getItem('whisper-api-key')") == "not-the-key"
    assert "not-the-key" not in page.url


def test_page_shows_each_segments_speaker(open_page, live_server, tmp_path):
    from tests.support import meetings

    if not meetings.kokoro_available():
        pytest.skip(meetings.KOKORO_INSTALL_HINT)
    script = [("jf_alpha", meetings.LONG_SENTENCES[0]), ("jm_kumo", meetings.LONG_SENTENCES[1]),
              ("jf_alpha", meetings.LONG_SENTENCES[2])]
    path = tmp_path / "two.wav"
    path.write_bytes(encode(meetings.build("two", script).samples, "wav"))
    # the server's first diarized request: its job is on the progress board while the speaker
    # model loads (the page's progress poll meets no 404 meanwhile)
    open_with, problems = open_page
    page = open_with("en-US")
    page.set_input_files("#audio-file", str(path))
    page.select_option("#language", "ja")
    page.select_option("#response-format", "diarized_json")
    page.click("#send")
    page.wait_for_selector("#segments li .speaker", timeout=MODEL_SECONDS)
    speakers = page.eval_on_selector_all("#segments li .speaker", "items => items.map(item => item.textContent)")
    assert speakers[0] == "A" and len(set(speakers)) >= 2  # the count itself is test_diarization's
    page.wait_for_function("() => document.getElementById('run-status').textContent.includes('Done')",
                           timeout=MODEL_SECONDS)
    events = [json.loads(line) for line in page.text_content("#raw").splitlines()]
    assert [event["speaker"] for event in events if event["type"] == "transcript.text.segment"] == speakers
    assert problems == []
