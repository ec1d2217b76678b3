"""The scheduler: concurrent jobs share batches, each gets what it would have got alone, a short
job is served while a long one runs, and one job's failure or hang-up costs that job only."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from dataclasses import replace

import numpy as np
import pytest
import requests
import torch

from tests.conftest import API_KEY, API_VERSION, make_settings
from tests.support.directml_rules import DirectMLRules
from tests.support.live_server import serve_in_thread
from tests.support.speech import JAPANESE_SENTENCES, MEETING_SENTENCES, concatenate, encode, japanese_speech
from whisper_api import create_app
from whisper_api.engine import Engine
from whisper_api.inference.batching import DecodingGroup
from whisper_api.inference.decoder import Decoder, DecodingRequest
from whisper_api.inference.forward import TextDecoder
from whisper_api.inference.model import LoadedModel
from whisper_api.inference.fallback import FallbackDecoder, QualityOptions
from whisper_api.inference.clip import ClipDecoding
from whisper_api.inference.long_form import VadStrategy
from whisper_api.cancellation import CLIENT_DISCONNECTED, Cancellation, JobCancelled
from whisper_api.model_queue import ModelQueue
from whisper_api.scheduler import MODEL_THREAD_NAME, ScheduledDecoder, Scheduler
from whisper_api.transcript import Transcript, TranscriptionJob

PATH = f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}"


@pytest.fixture(scope="module")
def shared(engine) -> Engine:
    """The session's model, four jobs at a time."""
    return engine.with_settings(max_concurrent_jobs=4, max_queue=4)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Three clips of two or three sentences each (4 to 12 s)."""
    sentences = MEETING_SENTENCES + JAPANESE_SENTENCES
    return [concatenate(*[japanese_speech(text) for text in sentences[first : first + count]], gap_seconds=0.6)[0]
            for first, count in ((0, 3), (3, 2), (6, 3))]


@pytest.fixture(scope="module")
def long_clip() -> np.ndarray:
    """About 100 s of speech: four chunks, decoded over many steps."""
    samples, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES], gap_seconds=0.8)
    return samples


def heard(transcript: Transcript) -> list[tuple]:
    return [(segment.start, segment.end, segment.text, tuple(segment.tokens),
             tuple((word.word, word.start, word.end) for word in segment.words)) for segment in transcript.segments]


def concurrently(function, arguments: list) -> list:
    results: list = [None] * len(arguments)

    def run(index: int) -> None:
        try:
            results[index] = function(arguments[index])
        except BaseException as error:  # noqa: BLE001 - the test looks at it
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(arguments))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return results


def calls_while_running(scheduler, threads: list[threading.Thread]) -> dict[int, int]:
    """Run the threads to their end; the decoding steps (or whole calls) they made, by rows."""
    calls_before = dict(scheduler.rows_per_step)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return {rows: count - calls_before.get(rows, 0) for rows, count in scheduler.rows_per_step.items()
            if count != calls_before.get(rows, 0)}


def wait_until_decoding(scheduler, steps_before: int | None = None) -> None:
    """Until the scheduler has run a few decoding steps more than `steps_before` (now, if None)."""
    steps_before = sum(scheduler.rows_per_step.values()) if steps_before is None else steps_before
    deadline = time.monotonic() + 300
    while sum(scheduler.rows_per_step.values()) < steps_before + 5:
        assert time.monotonic() < deadline, "no decoding step"
        time.sleep(0.01)


def job(samples: np.ndarray, **fields) -> TranscriptionJob:
    return TranscriptionJob(samples=samples, language="ja", **fields)


# ------------------------------------------------------------------ the same text, alone or together


def test_one_job_gets_the_tokens_of_the_decoding_loop_without_a_scheduler(shared, clips):
    """Greedy decoding through the scheduler gives the tokens, segments and words of the plain
    loop (a VadStrategy over the Decoder itself, as before the scheduler)."""
    plain = Decoder(shared.model)
    before = VadStrategy(ClipDecoding(shared.model, plain, FallbackDecoder(plain, QualityOptions()), shared.detector),
                         shared.settings.batch_size)
    for samples in clips[:2]:
        for word_timestamps in (False, True):
            with torch.no_grad():
                _, segments = before.transcribe(job(samples, word_timestamps=word_timestamps))
            reference = heard(Transcript("transcribe", "ja", 0.0, "", segments))
            assert heard(shared.transcribe(job(samples, word_timestamps=word_timestamps))) == reference


def test_concurrent_jobs_share_steps_and_each_gets_its_solo_transcript(shared, clips):
    settings = [{}, {}, {"word_timestamps": True}]  # two share steps; word timestamps decode apart
    alone = [heard(shared.transcribe(job(samples, **fields))) for samples, fields in zip(clips, settings)]
    scheduler = shared.scheduler
    shared_steps = sum(count for jobs, count in scheduler.steps_by_jobs.items() if jobs > 1)
    together = concurrently(lambda pair: heard(shared.transcribe(job(*pair[:1], **pair[1]))), list(zip(clips, settings)))
    assert together == alone
    assert sum(count for jobs, count in scheduler.steps_by_jobs.items() if jobs > 1) > shared_steps, \
        "no decoding step held rows of two jobs"


def test_whole_calls_take_rows_of_every_job_and_each_gets_its_solo_transcript(shared, clips, monkeypatch):
    """CUDA's way (greedy rows in whole calls of the plain loop, padded to the full batch), run
    here on the CPU's plain loop: the jobs' rows share calls, each job gets its solo text."""
    scheduler = shared.scheduler
    monkeypatch.setattr(scheduler, "whole_calls", True)
    alone = [heard(shared.transcribe(job(samples))) for samples in clips]
    shared_calls = sum(count for jobs, count in scheduler.steps_by_jobs.items() if jobs > 1)
    together = concurrently(lambda samples: heard(shared.transcribe(job(samples))), clips)
    assert together == alone
    assert sum(count for jobs, count in scheduler.steps_by_jobs.items() if jobs > 1) > shared_calls, \
        "no call held rows of two jobs"


def test_a_request_arriving_a_moment_after_another_joins_its_whole_call(shared, clips, monkeypatch):
    """CUDA's whole calls take rows between calls only: a burst of requests split over two calls
    (the first started before the last thread handed in its audio) costs a whole call. A call
    short of a full batch waits while requests are still arriving, so the second request's rows,
    handed in a moment after the first's, decode in the same call."""
    from whisper_api import scheduler as scheduling

    scheduler = shared.scheduler
    monkeypatch.setattr(scheduler, "whole_calls", True)
    # a margin for a loaded test machine: the second request hands in its rows 10 ms after it
    # came, well inside the quiet time asked for
    monkeypatch.setattr(scheduling, "GATHER_QUIET_SECONDS", 0.05)
    monkeypatch.setattr(scheduling, "GATHER_LIMIT_SECONDS", 1.0)
    model, tokens = shared.model, shared.model.tokens
    with torch.no_grad():
        encoded = model.encode(model.log_mel([clips[0], clips[1]]))
    request = DecodingRequest((tokens.start_of_transcript, tokens.languages["ja"], tokens.transcribe))
    second_came = threading.Event()
    results: dict[str, list] = {}

    def first() -> None:
        second_came.wait(10)
        with scheduler.job("first"):
            results["first"] = scheduler.decode(encoded[0:1], request, [3000])

    def second() -> None:
        with scheduler.job("second"):
            second_came.set()
            time.sleep(0.01)
            results["second"] = scheduler.decode(encoded[1:2], request, [3000])

    new_calls = calls_while_running(scheduler, [threading.Thread(target=first), threading.Thread(target=second)])
    assert set(results) == {"first", "second"}
    assert list(new_calls) == [2], new_calls  # one call of both rows, no call of one


def test_a_request_of_a_burst_that_hands_in_its_audio_late_shares_the_encoder_call_and_the_call(
        shared, clips, monkeypatch):
    """A request's thread may take longer than the quiet time to hand in its audio (it reads the
    upload and finds the speech first, while the other threads of a burst hold the interpreter
    lock). A batched call short of a full batch also waits while a job that has just come has
    handed in nothing: its piece joins the same encoder call (GPU: several pieces a call), its
    row the same whole call."""
    from whisper_api import scheduler as scheduling

    scheduler = shared.scheduler
    monkeypatch.setattr(scheduler, "whole_calls", True)
    monkeypatch.setattr(scheduler, "encoder_rows", 2)
    monkeypatch.setattr(scheduling, "GATHER_LIMIT_SECONDS", 2.0)  # the quiet time stays 5 ms
    encoder_calls: list[int] = []
    encode_audio = Decoder.encode_audio

    def recording(decoder, pieces):
        encoder_calls.append(len(pieces))
        return encode_audio(decoder, pieces)

    monkeypatch.setattr(Decoder, "encode_audio", recording)
    tokens = shared.model.tokens
    request = DecodingRequest((tokens.start_of_transcript, tokens.languages["ja"], tokens.transcribe))
    second_came = threading.Event()
    results: dict[str, list] = {}

    def transcribe(name: str, samples: np.ndarray, late: bool) -> None:
        if not late:
            second_came.wait(10)
        with scheduler.job(name):
            if late:
                second_came.set()
                time.sleep(0.2)  # forty times the quiet time
            results[name] = scheduler.decode(scheduler.encode([samples]), request, [3000])

    new_calls = calls_while_running(scheduler, [threading.Thread(target=transcribe, args=("first", clips[0], False)),
                                                threading.Thread(target=transcribe, args=("second", clips[1], True))])
    assert set(results) == {"first", "second"}
    assert encoder_calls == [2]
    assert list(new_calls) == [2], new_calls


def test_every_model_call_runs_on_the_one_model_thread_whichever_request_sends_it(shared, clips, monkeypatch):
    """Requests' threads hand their model work to the scheduler's own thread, which runs it all:
    PyTorch keeps state per thread (on CUDA, cuDNN's attention plans, rebuilt at a new thread's
    first call of each shape), so one thread, warmed once, serves every request."""
    callers: set[threading.Thread] = set()
    for owner, name in ((LoadedModel, "encode"), (TextDecoder, "prefill"), (TextDecoder, "step")):
        def recording(*arguments, _original=getattr(owner, name), **keywords):
            callers.add(threading.current_thread())
            return _original(*arguments, **keywords)
        monkeypatch.setattr(owner, name, recording)
    fields = [{}, {"word_timestamps": True}, {"logprobs": True}]  # shared steps, steps apart, a call of its own
    results = concurrently(lambda pair: shared.transcribe(job(pair[0], **pair[1])), list(zip(clips, fields)))
    assert all(isinstance(result, Transcript) and result.text for result in results), results
    assert all(segment.logprobs for segment in results[2].segments)
    assert [thread.name for thread in callers] == [MODEL_THREAD_NAME]
    assert threading.current_thread() not in callers


def test_an_engine_nobody_holds_is_freed_and_its_model_thread_ends(shared, clips):
    """The model thread holds its scheduler only for a turn and waits for work without it: a
    dropped engine's model (decoder and scheduler refer to each other) is freed."""
    decoder = ScheduledDecoder(shared.model, max_batch_rows=2, encoder_rows=1)
    with torch.no_grad():
        assert decoder.encode_audio([clips[0]]).shape[0] == 1
    thread = decoder.scheduler.model_thread
    assert thread is not None and thread.name == MODEL_THREAD_NAME
    freed = weakref.ref(decoder.scheduler)
    del decoder
    deadline = time.monotonic() + 10
    while freed() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    thread.join(timeout=5)
    assert freed() is None and not thread.is_alive()


def test_closing_ends_the_model_thread_and_refuses_more_work(shared, clips):
    """A stopping server closes the engine before the process exits: a thread left inside the
    model at the interpreter's exit aborts the process."""
    scheduler = Scheduler(Decoder(shared.model), max_batch_rows=2, encoder_rows=1)
    with torch.no_grad():
        scheduler.encode([clips[0]])
    thread = scheduler.model_thread
    assert thread is not None and thread.is_alive()
    assert scheduler.close(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.encode([clips[0]])


def test_sampled_rows_are_the_same_whatever_shares_their_batch(shared, clips):
    """Each sampled row draws from its own generator: a request sampled at 0.4 gets the same text
    alone as beside another job."""
    alone = heard(shared.transcribe(job(clips[1], temperature=0.4)))
    together = concurrently(lambda fields: heard(shared.transcribe(job(clips[fields[0]], **fields[1]))),
                            [(1, {"temperature": 0.4}), (0, {})])
    assert together[0] == alone


# ------------------------------------------------------------------ fairness


def test_a_short_job_decodes_beside_a_long_one_and_finishes_first(shared, long_clip, clips):
    """Behaviour, not timing: while the long job's rows decode, the short job's rows join the
    same steps, and it is done before the long one."""
    finished: list[str] = []
    long_running = threading.Event()

    def long_job() -> None:
        reports = lambda done, total: long_running.set() if done == 0 else None  # noqa: E731
        shared.transcribe(job(long_clip, on_progress=reports))
        finished.append("long")

    def short_job() -> None:
        shared.transcribe(job(clips[1]))
        finished.append("short")

    scheduler = shared.scheduler
    before = sum(count for jobs, count in scheduler.steps_by_jobs.items() if jobs > 1)
    long_thread = threading.Thread(target=long_job)
    long_thread.start()
    assert long_running.wait(120)
    wait_until_decoding(scheduler)
    short_thread = threading.Thread(target=short_job)
    short_thread.start()
    short_thread.join(timeout=600)
    long_thread.join(timeout=600)
    assert finished == ["short", "long"]
    assert sum(count for jobs, count in scheduler.steps_by_jobs.items() if jobs > 1) > before


def test_rows_over_a_job_share_make_room_for_a_newcomer(engine, long_clip, clips):
    """A job that fills the whole batch gives a row up (parked, resumed later where it stopped)
    to a newcomer: the two decode side by side in a full batch, and the long job's text is the
    same as alone."""
    narrow = Engine(replace(engine.settings, batch_size=0), engine.device, engine.model, 0.0, max_queue=4,
                    detector=engine.detector, max_concurrent_jobs=4, max_batch_rows=2)
    scheduler = narrow.scheduler
    alone = heard(narrow.transcribe(job(long_clip)))
    seen_both = threading.Event()
    real_step = DecodingGroup.step

    def watching_step(group):
        owners = {id(work.owner) for work in group.live()}
        if len(owners) > 1 and len(group.works) == scheduler.max_batch_rows:
            seen_both.set()
        return real_step(group)

    steps = sum(scheduler.rows_per_step.values())

    def run(samples):
        if samples is clips[2]:
            wait_until_decoding(scheduler, steps)
        return heard(narrow.transcribe(job(samples)))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DecodingGroup, "step", watching_step)
        results = concurrently(run, [long_clip, clips[2]])
    assert seen_both.is_set()
    assert results[0] == alone
    assert results[1] == heard(narrow.transcribe(job(clips[2])))


def test_a_row_of_another_group_gets_a_place_in_a_full_batch(engine, long_clip, clips):
    """Sampled rows (a group of their own) arriving while greedy rows of another job fill the
    batch: a greedy row is parked for them, and both jobs finish with their solo text."""
    narrow = Engine(replace(engine.settings, batch_size=0), engine.device, engine.model, 0.0, max_queue=4,
                    detector=engine.detector, max_concurrent_jobs=4, max_batch_rows=2)
    scheduler = narrow.scheduler
    alone = [heard(narrow.transcribe(job(long_clip))), heard(narrow.transcribe(job(clips[1], temperature=0.4)))]
    steps = sum(scheduler.rows_per_step.values())

    def run(samples):
        if samples is long_clip:
            return heard(narrow.transcribe(job(samples)))
        wait_until_decoding(scheduler, steps)
        return heard(narrow.transcribe(job(samples, temperature=0.4)))

    assert concurrently(run, [long_clip, clips[1]]) == alone


# ------------------------------------------------------------------ one job's failure or hang-up


def test_a_failing_row_fails_its_job_only(shared, clips, monkeypatch):
    """An out-of-memory on a batch shared by two jobs: both are decoded apart, the one whose own
    rows fail again gets the error, the other its solo transcript."""
    good, bad = clips[0], clips[1]
    alone = heard(shared.transcribe(job(good)))

    marked = Cancellation()  # never cancelled: it marks the bad job's rows
    real_step = DecodingGroup.step

    def failing_step(group):
        if any(getattr(work.owner.cancelled, "__self__", None) is marked for work in group.live()):
            raise torch.OutOfMemoryError("injected: out of memory on the bad job's rows")
        return real_step(group)

    monkeypatch.setattr(DecodingGroup, "step", failing_step)
    results = concurrently(lambda which: shared.transcribe(job(good)) if which == "good"
                           else shared.transcribe(job(bad, cancellation=marked)), ["good", "bad"])
    assert isinstance(results[1], torch.OutOfMemoryError)
    assert heard(results[0]) == alone
    monkeypatch.setattr(DecodingGroup, "step", real_step)
    assert heard(shared.transcribe(job(good))) == alone  # and the model serves the next one
    assert not shared.queue.busy()


def test_a_job_cancelled_while_decoding_leaves_the_batch(shared, long_clip, clips):
    """Its client hangs up once decoding has begun: it stops between two steps (JobCancelled);
    the job beside it finishes with its solo transcript."""
    alone = heard(shared.transcribe(job(clips[0])))
    scheduler = shared.scheduler
    steps = lambda: sum(scheduler.rows_per_step.values())  # noqa: E731
    before = steps()

    def cancelled() -> bool:
        return steps() >= before + 10

    def run(which: str):
        if which == "cancelled":
            return shared.transcribe(job(long_clip, cancellation=Cancellation(((CLIENT_DISCONNECTED, cancelled),))))
        return heard(shared.transcribe(job(clips[0])))

    results = concurrently(run, ["cancelled", "kept"])
    assert isinstance(results[0], JobCancelled) and results[0].reason == CLIENT_DISCONNECTED
    assert results[1] == alone
    assert not shared.queue.busy()


# ------------------------------------------------------------------ the DirectML rules over a shared batch


def test_a_batch_of_several_jobs_keeps_the_directml_rules(shared, clips):
    """Each job's thread watches the model under the checker; whichever schedules runs the others'
    rows too, so between them they see every operation of the shared steps."""
    scheduler = shared.scheduler
    before = sum(count for jobs, count in scheduler.steps_by_jobs.items() if jobs > 1)

    def checked(fields: dict):
        with DirectMLRules() as rules:
            transcript = shared.transcribe(job(clips[fields.pop("clip")], **fields))
        return rules, transcript

    results = concurrently(checked, [{"clip": 0}, {"clip": 2}, {"clip": 1, "word_timestamps": True}])
    assert sum(count for jobs, count in scheduler.steps_by_jobs.items() if jobs > 1) > before
    for rules, transcript in results:
        assert transcript.text
        assert not rules.violations(), rules.report()


# ------------------------------------------------------------------ through the live server


@pytest.fixture(scope="module")
def server(shared, model_settings):
    app = create_app(make_settings(model_settings, max_concurrent_jobs=4, max_queue=4, threads=12), engine=shared)
    with serve_in_thread(app) as url:
        yield url


def post(url: str, samples: np.ndarray, **fields) -> requests.Response:
    return requests.post(url + PATH, headers={"api-key": API_KEY}, files={"file": ("a.wav", encode(samples, "wav"))},
                         data={"language": "ja", "response_format": "verbose_json", **fields}, timeout=600)


def test_concurrent_requests_get_their_solo_answers_through_the_server(server, clips):
    alone = [post(server, samples).json() for samples in clips]
    together = concurrently(lambda samples: post(server, samples), clips)
    assert [response.status_code for response in together] == [200] * len(clips)
    for response, body in zip(together, alone):
        assert response.json()["text"] == body["text"]
        assert [heard_segment(segment) for segment in response.json()["segments"]] == \
            [heard_segment(segment) for segment in body["segments"]]
        # scores are sums over the same tokens, computed in batches of other sizes: equal to rounding
        assert [segment["avg_logprob"] for segment in response.json()["segments"]] == \
            pytest.approx([segment["avg_logprob"] for segment in body["segments"]], abs=1e-4)


def heard_segment(segment: dict) -> tuple:
    return segment["start"], segment["end"], segment["text"], tuple(segment["tokens"]), segment["temperature"]


def test_a_request_that_hangs_up_while_running_frees_its_rows_for_the_others(server, shared, long_clip, clips):
    import socket

    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
            + encode(long_clip, "wav") + b"\r\n--b\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nja"
            + b"\r\n--b--\r\n")
    host, port = server.removeprefix("http://").split(":")
    impatient = socket.create_connection((host, int(port)))
    impatient.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\napi-key: {API_KEY}\r\nContent-Type: multipart/form-data;"
                      f" boundary=b\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    deadline = time.monotonic() + 120
    while not shared.scheduler.jobs_running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert shared.scheduler.jobs_running
    impatient.close()
    kept = post(server, clips[0])
    assert kept.status_code == 200
    deadline = time.monotonic() + 120
    while shared.queue.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not shared.queue.busy(), "the hung-up job kept running"


# ------------------------------------------------------------------ admission


def test_the_queue_admits_up_to_max_running_jobs_at_once():
    queue = ModelQueue(max_waiting=1, max_running=2)
    entered = threading.Barrier(3, timeout=10)

    def hold() -> None:
        with queue.turn():
            entered.wait()
            entered.wait()

    workers = [threading.Thread(target=hold) for _ in range(2)]
    for worker in workers:
        worker.start()
    entered.wait()  # both run at once
    assert queue.running == 2 and queue.busy()
    entered.wait()
    for worker in workers:
        worker.join(timeout=10)
    assert queue.running == 0
