"""Prometheus metrics: the per-app registry, what each request and job records, `GET /metrics`.

Each app has its own registry (not prometheus_client's global one), so several apps in one
process, as in the tests, count separately.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client.core import HistogramMetricFamily
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from . import access_log
from .app_state import settings
from .auth import authenticate
from .progress import JobProgress

if TYPE_CHECKING:  # metrics read the engine's info and queue; they never import torch
    from .engine import Engine

blueprint = Blueprint("metrics", __name__)

BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)
BATCH_JOBS_BUCKETS = (1, 2, 3, 4, 6, 8, 16, 32, 64, 256)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
REAL_TIME_FACTOR_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)
METRICS = "whisper_api.metrics"
UNMATCHED_ROUTE = "unmatched"  # any path no route answers: one label, however many paths are probed


class Metrics:
    def __init__(self, engine: "Engine") -> None:
        disable_created_metrics()  # a *_created series beside every counter only doubles each scrape
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "whisper_api_requests", "HTTP requests answered, by route pattern, method, deployment and status.",
            ["route", "method", "deployment", "status"], registry=registry,
        )
        self.request_seconds = Histogram(
            "whisper_api_request_duration_seconds", "Time from request to response (upload, queue, model, format).",
            ["route"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.processing_seconds = Histogram(
            "whisper_api_processing_seconds", "Time a transcription held the model (queue wait excluded).",
            ["deployment"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "whisper_api_queue_wait_seconds", "Time a transcription waited for the model.",
            ["deployment"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.audio_seconds = Counter(
            "whisper_api_audio_seconds", "Seconds of audio transcribed or translated.", ["deployment"],
            registry=registry,
        )
        self.real_time_factor = Histogram(
            "whisper_api_real_time_factor", "Model time divided by audio duration, per job (below 1 is faster than real time).",
            ["deployment"], buckets=REAL_TIME_FACTOR_BUCKETS, registry=registry,
        )
        self.model_seconds = Histogram(
            "whisper_api_model_seconds", "Model time spent on a job's own work, per job (calls it shared with other "
            "jobs counted by its share of the rows).", ["deployment"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.diarization_seconds = Histogram(
            "whisper_api_diarization_seconds", "Time speaker labelling took after a transcription (CPU).",
            ["deployment"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.rejected = Counter(
            "whisper_api_queue_rejections", "Requests refused with 429 because the model's queue was full.",
            ["deployment"], registry=registry,
        )
        queue = engine.queue
        Gauge("whisper_api_queue_waiting", "Jobs waiting for the model.", registry=registry).set_function(
            lambda: queue.waiting
        )
        Gauge("whisper_api_queue_limit", "Jobs allowed to wait ([server] max_queue).", registry=registry).set_function(
            lambda: queue.max_waiting
        )
        Gauge("whisper_api_model_busy", "1 while a job runs on the model.", registry=registry).set_function(
            lambda: 1 if queue.busy() else 0
        )
        Gauge("whisper_api_jobs_running", "Jobs admitted to the scheduler, sharing its batches.",
              registry=registry).set_function(lambda: queue.running)
        Gauge("whisper_api_jobs_limit", "Jobs allowed to run at once ([server] max_concurrent_jobs).",
              registry=registry).set_function(lambda: queue.max_running)
        registry.register(SchedulerCollector(engine.scheduler))
        info = engine.info
        Gauge("whisper_api_model_load_seconds", "Seconds the model took to load at start-up.", registry=registry).set(
            info.load_seconds
        )
        Info("whisper_api_model", "The model and where it runs.", registry=registry).info({
            "model": info.model, "device": info.device, "device_name": info.device_name, "dtype": info.dtype,
            "attention": info.attention, "strategy": info.strategy,
        })
        Gauge(
            "whisper_api_process_resident_memory_bytes", "Resident memory of the server process (Windows too).",
            registry=registry,
        ).set_function(resident_memory_bytes)
        ProcessCollector(registry=registry)  # process_* (CPU, memory, files) where /proc exists

    def observe_request(self, route: str, method: str, deployment: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, deployment, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def observe_job(self, job: JobProgress) -> None:
        """A finished transcription: its audio, model time, queue wait and real-time factor."""
        finished = job.finished or time.monotonic()
        started = job.started if job.started is not None else job.submitted
        processing = max(0.0, finished - started)
        self.audio_seconds.labels(job.deployment).inc(job.audio_seconds)
        self.processing_seconds.labels(job.deployment).observe(processing)
        self.queue_wait_seconds.labels(job.deployment).observe(max(0.0, started - job.submitted))
        if job.audio_seconds > 0:
            self.real_time_factor.labels(job.deployment).observe(processing / job.audio_seconds)

    def observe_model_time(self, deployment: str, seconds: float) -> None:
        self.model_seconds.labels(deployment).observe(seconds)

    def observe_diarization(self, deployment: str, seconds: float) -> None:
        self.diarization_seconds.labels(deployment).observe(seconds)

    def observe_rejection(self, deployment: str) -> None:
        self.rejected.labels(deployment).inc()


class SchedulerCollector:
    """The scheduler's decoding steps as histograms: rows per step and jobs sharing a step."""

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    def collect(self):
        yield histogram("whisper_api_batch_rows", "Rows decoded per decoding step, all jobs together.",
                        dict(self.scheduler.rows_per_step), BATCH_ROWS_BUCKETS)
        yield histogram("whisper_api_batch_jobs", "Jobs whose rows shared a decoding step.",
                        dict(self.scheduler.steps_by_jobs), BATCH_JOBS_BUCKETS)


def histogram(name: str, documentation: str, counts: dict[int, int], bounds: tuple[int, ...]) -> HistogramMetricFamily:
    cumulative = [(str(bound), sum(count for value, count in counts.items() if value <= bound)) for bound in bounds]
    cumulative.append(("+Inf", sum(counts.values())))
    return HistogramMetricFamily(name, documentation, buckets=cumulative,
                                 sum_value=sum(value * count for value, count in counts.items()))


def metrics() -> Metrics:
    return current_app.extensions[METRICS]


def resident_memory_bytes() -> float:
    try:
        import psutil
    except ImportError:  # the gauge reads NaN rather than failing the scrape
        return float("nan")
    return float(psutil.Process(os.getpid()).memory_info().rss)


def route_of(app: Flask, path: str, method: str) -> str:
    """The route pattern `path` matches (a label, for responses the app itself never produced)."""
    try:
        rule, _ = app.url_map.bind("localhost").match(path, method, return_rule=True)
    except Exception:  # not found, wrong method, a path no URL parser accepts
        return UNMATCHED_ROUTE
    return rule.rule


@blueprint.get("/metrics")
def serve_metrics() -> Response:
    current = settings()
    if current.auth.api_keys and current.metrics.require_api_key:
        authenticate()
    return Response(generate_latest(metrics().registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask, engine: "Engine") -> None:
    app.extensions[METRICS] = Metrics(engine)
    app.register_blueprint(blueprint)

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        started = getattr(g, "metrics_started", None) or time.perf_counter()
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        method, logged, recorder = request.method, access_log.fields(), metrics()

        def observe() -> None:
            # the deployment label only ever holds configured names: routes note it once resolved
            recorder.observe_request(route, method, logged.get("deployment", ""),
                                     access_log.final_status(response, logged), time.perf_counter() - started)

        access_log.when_finished(response, observe)
        return response
