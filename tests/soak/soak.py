"""Soak: a real server under mixed good and bad traffic for a while; counts, latency, RSS, verdict.

    python -m tests.soak.soak --minutes 3 --clients 8 [--model PATH | --config INI | --url URL]
        [--max-requests N] [--json PATH]

By default the server runs in this process (the test Whisper base checkpoint, on the CPU unless
--device says otherwise), so the RSS sampled is the server's own. --url targets a server already
running on loopback (give --pid to sample its RSS). Good requests are real Japanese speech in
several containers and every response_format, each answer checked against the spoken sentence;
bad ones are garbage bytes, bad fields, a wrong key, an unknown deployment and an oversized body.
The exit status is 1 on any 5xx, wrong transcript, connection error or malformed error body, or
RSS growth of 10% or more after warm-up; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import ipaddress
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import requests

API_VERSION = "2024-06-01"
SOAK_KEY = "soak-key"
MAX_CHARACTER_ERROR_RATE = 0.35
MAX_RSS_GROWTH_PERCENT = 10.0
WARM_UP_FRACTION = 0.2
REQUEST_TIMEOUT = (10, 300)
CLIP_FORMATS = ("wav", "flac", "mp3", "ogg", "m4a", "webm")
RESPONSE_FORMATS = ("json", "verbose_json", "text", "srt", "vtt")
# kind -> share of the traffic; good requests are most of it, as in real use
MIX = {"good": 60, "garbage": 10, "bad_field": 10, "wrong_key": 7, "unknown_deployment": 7, "oversized": 6}
EXPECTED_STATUS = {"garbage": 400, "bad_field": 400, "wrong_key": 401, "unknown_deployment": 404, "oversized": 413}
BAD_FIELDS = (
    {"temperature": "2"},
    {"temperature": "nan"},
    {"response_format": "xml"},
    {"language": "xx"},
    {"timestamp_granularities[]": "word", "response_format": "json"},
    {"prompt": "あ" * 4001},
)


# --- the target -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    url: str
    key: str
    deployment: str
    max_upload_bytes: int


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address in ipaddress.ip_network("127.0.0.0/8") or address == ipaddress.ip_address("::1")


def target_for_app(app, url: str) -> Target:
    settings = app.extensions["whisper_api.settings"]
    keys = settings.auth.api_keys
    return Target(
        url=url,
        key=keys[0] if keys else SOAK_KEY,
        deployment=sorted(settings.deployments)[0],
        max_upload_bytes=settings.server.max_upload_bytes,
    )


def soak_settings(model_name: str, device: str):
    """The shipped server defaults with one key and a deployment per kind of default."""
    from whisper_api.config import AuthSettings, DeploymentSettings, ModelSettings, ServerSettings, Settings

    return Settings(
        server=ServerSettings(),
        auth=AuthSettings(api_keys=(SOAK_KEY,)),
        model=ModelSettings(name=model_name, device=device, dtype="float32", warmup=True),
        deployments={"whisper": DeploymentSettings("whisper"), "whisper-ja": DeploymentSettings("whisper-ja", "ja")},
        source="soak",
    )


@contextmanager
def serving(app) -> Iterator[str]:
    from tests.support.live_server import serve_in_thread

    with serve_in_thread(app) as url:
        yield url


# --- traffic ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clip:
    sentence: str
    audio_format: str
    data: bytes
    seconds: float


def make_clips(sentences: int | None = None) -> list[Clip]:
    from tests.support.speech import JAPANESE_SENTENCES, encode, japanese_speech

    clips = []
    for sentence in JAPANESE_SENTENCES[:sentences]:
        samples = japanese_speech(sentence)
        for audio_format in CLIP_FORMATS:
            clips.append(Clip(sentence, audio_format, encode(samples, audio_format), len(samples) / 16000))
    return clips


@dataclasses.dataclass
class Outcome:
    kind: str
    status: int | None  # None: no answer (connection error or timeout)
    seconds: float
    error: str | None = None  # "5xx", "wrong_transcript", "connection", "bad_envelope", "unexpected_status"
    detail: str = ""
    audio_seconds: float = 0.0


def transcript_text(response: requests.Response, response_format: str) -> str:
    import srt
    import webvtt

    if response_format in ("json", "verbose_json"):
        return response.json()["text"]
    text = response.content.decode("utf-8")
    if response_format == "srt":
        return "".join(cue.content for cue in srt.parse(text))
    if response_format == "vtt":
        return "".join(caption.text for caption in webvtt.from_buffer(io.StringIO(text)))
    return text


def has_envelope(response: requests.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error.get("code"), str) and isinstance(error.get("message"), str)


class Client:
    """One thread's requests: a keep-alive session and its own random stream."""

    def __init__(self, target: Target, clips: list[Clip], seed: int, oversized: tuple[bytes, ...]) -> None:
        self.target = target
        self.clips = clips
        self.oversized = oversized
        self.random = random.Random(seed)
        self.session = requests.Session()

    def transcriptions_url(self, deployment: str | None = None) -> str:
        deployment = deployment or self.target.deployment
        return f"{self.target.url}/openai/deployments/{deployment}/audio/transcriptions?api-version={API_VERSION}"

    def post(self, url: str, data: bytes, fields: dict, key: str | None = None, filename: str = "audio"):
        return self.session.post(
            url, headers={"api-key": key or self.target.key}, files={"file": (filename, data)}, data=fields,
            timeout=REQUEST_TIMEOUT,
        )

    def one_request(self) -> Outcome:
        kind = self.random.choices(list(MIX), weights=list(MIX.values()))[0]
        clip = self.random.choice(self.clips)
        response_format = self.random.choice(RESPONSE_FORMATS)
        fields: dict = {"language": "ja", "response_format": response_format}
        url, key, data = self.transcriptions_url(), None, clip.data
        if kind == "garbage":
            data = self.random.choice([b"", b"RIFF", b"OggS", b"fLaC", b"ID3"]) + self.random.randbytes(
                self.random.randint(0, 4096))
        elif kind == "bad_field":
            fields.update(self.random.choice(BAD_FIELDS))
        elif kind == "wrong_key":
            key = "wrong-" + self.random.randbytes(8).hex()
        elif kind == "unknown_deployment":
            url = self.transcriptions_url("no-such-deployment-" + self.random.randbytes(4).hex())
        elif kind == "oversized":
            data = self.random.choice(self.oversized)
        started = time.perf_counter()
        try:
            response = self.post(url, data, fields, key, filename=f"speech.{clip.audio_format}")
        except requests.RequestException as error:
            return Outcome(kind, None, time.perf_counter() - started, "connection", f"{type(error).__name__}: {error}")
        outcome = Outcome(kind, response.status_code, time.perf_counter() - started)
        if response.status_code >= 500:
            outcome.error, outcome.detail = "5xx", response.text[:300]
        elif response.status_code >= 400 and not has_envelope(response):
            outcome.error, outcome.detail = "bad_envelope", response.text[:300]
        elif kind == "good" and response.status_code == 200:
            outcome.audio_seconds = clip.seconds
            try:
                text = transcript_text(response, response_format)
            except Exception as error:  # an unparsable body is a wrong answer too
                text = f"<unparsable {response_format}: {error}>"
            from tests.support.speech import character_error_rate

            if character_error_rate(clip.sentence, text) >= MAX_CHARACTER_ERROR_RATE:
                outcome.error = "wrong_transcript"
                outcome.detail = f"{clip.audio_format}/{response_format}: {clip.sentence!r} -> {text[:120]!r}"
        elif response.status_code != EXPECTED_STATUS.get(kind, 200) and response.status_code != 429:
            # not a failure by itself (random bytes may decode), but worth a look
            outcome.error, outcome.detail = "unexpected_status", f"{kind}: {response.status_code} {response.text[:200]}"
        return outcome


# --- memory -----------------------------------------------------------------------------------


def rss_reader(pid: int | None = None):
    """A function returning the RSS in bytes of `pid` (default: this process), and its source."""
    pid = pid or os.getpid()
    try:
        import psutil

        process = psutil.Process(pid)
        return (lambda: process.memory_info().rss), "psutil"
    except ImportError:
        pass
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        def from_proc() -> int | None:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
            return None

        return from_proc, "/proc VmRSS"
    return (lambda: None), "unavailable"


class RssSampler(threading.Thread):
    def __init__(self, read, interval_seconds: float) -> None:
        super().__init__(name="soak-rss", daemon=True)
        self.read = read
        self.interval_seconds = interval_seconds
        self.samples: list[tuple[float, int]] = []  # (seconds since start, bytes)
        self.stopped = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while True:
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic() - self.started_at, value))
            if self.stopped.wait(self.interval_seconds):
                return


def rss_summary(samples: list[tuple[float, int]], run_seconds: float) -> dict | None:
    """Growth from the end of warm-up (median of 15-25% of the run) to the median of the last 10%."""
    if len(samples) < 4:
        return None
    after_warm_up = [value for at, value in samples if 0.15 * run_seconds <= at <= 0.25 * run_seconds]
    final = [value for at, value in samples if at >= 0.9 * run_seconds]
    after_warm_up = after_warm_up or [samples[len(samples) // 5][1]]
    final = final or [samples[-1][1]]
    baseline, end = statistics.median(after_warm_up), statistics.median(final)
    return {
        "start_mb": samples[0][1] / 2**20,
        "after_warm_up_mb": baseline / 2**20,
        "end_mb": end / 2**20,
        "peak_mb": max(value for _, value in samples) / 2**20,
        "growth_percent": (end - baseline) / baseline * 100,
        "samples": len(samples),
    }


# --- the run ----------------------------------------------------------------------------------


@dataclasses.dataclass
class SoakReport:
    seconds: float
    clients: int
    outcomes: list[Outcome]
    rss: dict | None
    rss_source: str
    excluded_clips: list[str] = dataclasses.field(default_factory=list)

    def errors(self) -> Counter:
        return Counter(outcome.error for outcome in self.outcomes if outcome.error)

    def failed(self) -> list[str]:
        errors = self.errors()
        reasons = [f"{errors[kind]} {kind}" for kind in ("5xx", "wrong_transcript", "connection", "bad_envelope")
                   if errors[kind]]
        if self.rss and self.rss["growth_percent"] >= MAX_RSS_GROWTH_PERCENT:
            reasons.append(f"RSS grew {self.rss['growth_percent']:.1f}% after warm-up")
        return reasons

    def to_dict(self) -> dict:
        by_kind: dict = {}
        for kind, outcomes in self.by_kind().items():
            latencies = [outcome.seconds for outcome in outcomes if outcome.status is not None]
            by_kind[kind] = {
                "count": len(outcomes),
                "statuses": dict(Counter(str(outcome.status) for outcome in outcomes)),
                "latency_ms": percentiles(latencies),
            }
        return {
            "seconds": round(self.seconds, 1),
            "clients": self.clients,
            "requests": len(self.outcomes),
            "requests_per_second": len(self.outcomes) / self.seconds if self.seconds else 0.0,
            "audio_seconds_transcribed": sum(outcome.audio_seconds for outcome in self.outcomes),
            "by_kind": by_kind,
            "errors": dict(self.errors()),
            "error_examples": [dataclasses.asdict(outcome) for outcome in self.outcomes if outcome.error][:20],
            "rss": self.rss,
            "rss_source": self.rss_source,
            "excluded_clips": self.excluded_clips,
            "failed": self.failed(),
        }

    def by_kind(self) -> dict[str, list[Outcome]]:
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in self.outcomes:
            groups[outcome.kind].append(outcome)
        return {kind: groups[kind] for kind in MIX if kind in groups}


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def at(fraction: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))] * 1000

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def calibrate(target: Target, clips: list[Clip]) -> tuple[list[Clip], list[str]]:
    """Send each clip once, alone, before the clock starts: a clip the model gets wrong even then
    (the base model writes some sentences in other scripts from some codecs) says nothing about
    load, so it is left out of the soak and named in the report."""
    client = Client(target, clips, 0, ())
    kept, excluded = [], []
    for clip in clips:
        response = client.post(client.transcriptions_url(), clip.data, {"language": "ja"})
        from tests.support.speech import character_error_rate

        if response.status_code == 200 and character_error_rate(clip.sentence, response.json()["text"]) < (
            MAX_CHARACTER_ERROR_RATE
        ):
            kept.append(clip)
        else:
            excluded.append(f"{clip.audio_format} {clip.sentence} -> {response.status_code} {response.text[:80]}")
    if not kept:
        raise SystemExit("every clip is transcribed wrongly even alone:\n" + "\n".join(excluded))
    return kept, excluded


def run_soak(
    target: Target, seconds: float, clients: int, max_requests: int, rss_pid: int | None = None, seed: int = 0,
    clips: list[Clip] | None = None,
) -> SoakReport:
    """`clients` threads send requests until `seconds` pass or `max_requests` are sent, whichever first."""
    clips, excluded = calibrate(target, clips or make_clips())
    # made once, so clients' allocations do not blur the RSS of an in-process server: one body just
    # over the app's limit (Flask refuses it), one over Waitress' limit (refused from its length)
    oversized = (bytes(target.max_upload_bytes + 1), bytes(target.max_upload_bytes + 256 * 1024))
    read, rss_source = rss_reader(rss_pid)
    sampler = RssSampler(read, interval_seconds=max(0.25, min(2.0, seconds / 200)))
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    sent = 0
    started = time.monotonic()
    deadline = started + seconds

    def client_loop(index: int) -> None:
        nonlocal sent
        client = Client(target, clips, seed * 1000 + index, oversized)
        while time.monotonic() < deadline:
            with lock:
                if sent >= max_requests:
                    return
                sent += 1
            outcome = client.one_request()
            with lock:
                outcomes.append(outcome)

    sampler.start()
    threads = [threading.Thread(target=client_loop, args=(index,), name=f"soak-client-{index}", daemon=True)
               for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:  # each ends by the deadline plus at most one request's timeout
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + sum(REQUEST_TIMEOUT) + 5)
    elapsed = time.monotonic() - started
    sampler.stopped.set()
    sampler.join(timeout=5)
    with lock:
        finished = list(outcomes)
    return SoakReport(elapsed, clients, finished, rss_summary(sampler.samples, elapsed), rss_source, excluded)


def soak_app(app, seconds: float, clients: int, max_requests: int = 100_000, seed: int = 0) -> SoakReport:
    """Soak `app` (an existing engine's, as the tests share one) on a Waitress server in this process."""
    with serving(app) as url:
        return run_soak(target_for_app(app, url), seconds, clients, max_requests, seed=seed)


# --- the report -------------------------------------------------------------------------------


def format_table(report: SoakReport) -> str:
    data = report.to_dict()
    statuses = sorted({status for kind in data["by_kind"].values() for status in kind["statuses"]},
                      key=lambda status: (status == "None", status))
    header = ["kind", "count", *[("no answer" if status == "None" else status) for status in statuses],
              "p50 ms", "p95 ms", "p99 ms"]
    rows = []
    for kind, row in data["by_kind"].items():
        latency = row["latency_ms"]
        rows.append([kind, str(row["count"]), *[str(row["statuses"].get(status, 0)) for status in statuses],
                     *[("-" if latency[name] is None else f"{latency[name]:.0f}") for name in ("p50", "p95", "p99")]])
    all_latencies = [outcome.seconds for outcome in report.outcomes if outcome.status is not None]
    totals = Counter(str(outcome.status) for outcome in report.outcomes)
    overall = percentiles(all_latencies)
    rows.append(["all", str(len(report.outcomes)), *[str(totals.get(status, 0)) for status in statuses],
                 *[("-" if overall[name] is None else f"{overall[name]:.0f}") for name in ("p50", "p95", "p99")]])
    widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) if index == 0 else cell.rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths)))

    errors = report.errors()
    good = len(report.by_kind().get("good", []))
    lines = [
        f"soak: {data['seconds']:.0f} s, {report.clients} clients, {len(report.outcomes)} requests",
        line(header),
        line(["-" * width for width in widths]),
        *[line(row) for row in rows],
        "",
        "errors: " + ", ".join(f"{kind} {errors[kind]}" for kind in
                               ("5xx", "wrong_transcript", "connection", "bad_envelope", "unexpected_status")),
        f"throughput: {data['requests_per_second']:.2f} requests/s, {good / report.seconds:.2f} good/s, "
        f"{data['audio_seconds_transcribed'] / report.seconds:.2f} s of audio per s",
    ]
    if report.rss:
        rss = report.rss
        lines.append(
            f"rss ({report.rss_source}, {rss['samples']} samples): start {rss['start_mb']:.0f} MB, "
            f"after warm-up {rss['after_warm_up_mb']:.0f} MB, end {rss['end_mb']:.0f} MB, "
            f"peak {rss['peak_mb']:.0f} MB, growth after warm-up {rss['growth_percent']:+.1f}%"
        )
    else:
        lines.append(f"rss: not measured ({report.rss_source})")
    for clip in report.excluded_clips:
        lines.append(f"  clip left out, wrong even alone: {clip}")
    for outcome in [outcome for outcome in report.outcomes if outcome.error][:10]:
        lines.append(f"  {outcome.error}: {outcome.kind} {outcome.status} {outcome.detail}")
    failed = report.failed()
    lines.append("verdict: " + ("FAIL: " + "; ".join(failed) if failed else "pass"))
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to run (default 3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="soak this model directory or hub id (default: the test Whisper base)")
    source.add_argument("--config", help="soak the server this INI describes, in this process")
    source.add_argument("--url", help="soak a server already running on loopback, e.g. http://127.0.0.1:8000")
    parser.add_argument("--device", default="cpu", help="device for --model or the default checkpoint (default cpu)")
    parser.add_argument("--key", help="API key for --url (default: the first [auth] key, else any)")
    parser.add_argument("--deployment", help="deployment to call (default: the first configured)")
    parser.add_argument("--max-upload-mb", type=float, default=25.0, help="the --url server's upload limit")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, to sample its RSS")
    parser.add_argument("--sentences", type=int, help="use only the first N test sentences (default all 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the report as JSON here")
    arguments = parser.parse_args(argv)
    if arguments.minutes <= 0 or arguments.clients < 1 or arguments.max_requests < 1:
        parser.error("--minutes must be positive, --clients and --max-requests at least 1")
    if arguments.url and not is_loopback(arguments.url):
        parser.error(f"--url {arguments.url!r}: only loopback servers (127.0.0.0/8, localhost, ::1) may be soaked")
    if arguments.pid and not arguments.url:
        parser.error("--pid goes with --url; an in-process server's RSS is this process's")
    return arguments


def main(argv: list[str] | None = None, app=None) -> int:
    """Run the soak from the command line; `app` soaks an existing app (its engine already loaded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    arguments = parse_arguments(argv)
    seconds = arguments.minutes * 60
    clips = make_clips(arguments.sentences)
    if arguments.url:
        url = arguments.url.rstrip("/")
        target = Target(url, arguments.key or SOAK_KEY, arguments.deployment or discover_deployment(url, arguments.key),
                        int(arguments.max_upload_mb * 2**20))
        report = run_soak(target, seconds, arguments.clients, arguments.max_requests, arguments.pid, arguments.seed,
                          clips)
    else:
        if app is None:
            app = build_app(arguments)
        with serving(app) as url:
            target = target_for_app(app, url)
            if arguments.deployment:
                target = dataclasses.replace(target, deployment=arguments.deployment)
            report = run_soak(target, seconds, arguments.clients, arguments.max_requests, seed=arguments.seed,
                              clips=clips)
    print(format_table(report))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return 1 if report.failed() else 0


def build_app(arguments: argparse.Namespace):
    from whisper_api import create_app
    from whisper_api.config import load_settings

    if arguments.config:
        settings = load_settings(arguments.config)
    else:
        if arguments.model:
            model_name = arguments.model
        else:
            from tests.support.whisper_checkpoint import ensure_whisper_base

            model_name = str(ensure_whisper_base())
        settings = soak_settings(model_name, arguments.device)
    return create_app(settings)


def discover_deployment(url: str, key: str | None) -> str:
    response = requests.get(f"{url}/openai/deployments?api-version={API_VERSION}",
                            headers={"api-key": key or SOAK_KEY}, timeout=REQUEST_TIMEOUT)
    response.raise_for_status()
    names = [item["id"] for item in response.json()["data"]]
    if not names:
        raise SystemExit(f"{url} lists no deployments")
    return names[0]


if __name__ == "__main__":
    sys.exit(main())
