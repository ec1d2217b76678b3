"""The scheduler: one model, one lock, and every running job's work in the same batches.

Jobs (requests) run their own logic in their own threads: chunk plans, temperature fallback,
resumes, segments. What needs the model they hand to the scheduler as work: pieces of audio to
encode, rows to decode (one per chunk, resume or fallback), and whole calls (beam search,
language detection). Nothing below knows there is more than one job.

The model is held by one thread, the scheduler's own ("whisper-api model", started with the first
work and kept while the scheduler lives): every model call runs there, and job threads only hand in
work and wait for it. PyTorch keeps some state per thread (on CUDA, cuDNN's attention plans: a
thread's first call of each shape builds them again, 80 to 130 ms on an H200), so one thread warmed
once serves every request. Each turn of the loop is one model call, chosen fairly: the job with the
least model time so far goes first, and a newcomer starts a little ahead of the least served
(NEWCOMER_CREDIT_SECONDS), so a 10 s request that arrives during an hour-long one is served at
once, beside it, not after it.

- Encoder calls take pieces from every job waiting for one, the least served first, up to
  `encoder_rows` (on a CPU one piece a call: batching buys nothing there, and a short call lets
  a newcomer in sooner).
- Decoding steps take rows from every running job, up to `max_batch_rows` in all, shared evenly
  among the jobs that have rows to decode (round robin; rows of a job over its share are parked
  and rejoin later where they stopped). Rows that cannot share a step (temperature, word
  timestamps, context length, token limit; beam search runs as a whole call) are grouped.
- A failure costs its job only: when a call shared by several jobs fails (an out-of-memory on a
  large batch, a chunk that breaks the model), its jobs are decoded apart from then on, each
  from where it was; the one whose own call fails again gets the error, the others go on.
- A job whose client hangs up (its `cancelled()` turns true) leaves between two steps; its rows
  leave the batch.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import signal
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.overrides import _get_current_function_mode_stack
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from .inference.batching import DecodingGroup, GroupKey, RowWork, Rows
from .inference.decoder import Decoded, Decoder, DecodingRequest, T
from .inference.model import LoadedModel
from .model_queue import Cancelled

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
# With no job at all, the model thread waits without holding its scheduler, and looks this often
# whether it is still in use (a dropped engine's model is freed, and its thread ends).
IDLE_SECONDS = 1.0
MODEL_THREAD_NAME = "whisper-api model"
# At the interpreter's exit, how long the model thread may take to end its current call (a thread
# left inside the model while the interpreter shuts down aborts the process).
EXIT_WAIT_SECONDS = 10.0
# A whole graphed call (CUDA), or an encoder call of several pieces, that would start short of a
# full batch waits while requests are still arriving: while a job that came less than
# GATHER_LIMIT_SECONDS ago has handed in nothing yet, or until no job has arrived or handed in work
# for GATHER_QUIET_SECONDS; GATHER_LIMIT_SECONDS at most. Rows join between calls only, so a burst
# of requests split over two calls (the first started before the last threads handed in their
# audio) costs a whole call.
GATHER_QUIET_SECONDS = 0.005
GATHER_LIMIT_SECONDS = 0.05
# Before a short call, the model thread first lets the other threads run this long (the wait
# releases the interpreter lock): threads of a burst that have not yet come to the scheduler come now.
GATHER_YIELD_SECONDS = 0.001
# A newcomer starts this many model seconds ahead of the least served job (never below zero):
# a short request runs at once, ahead of a long one, until it has had that much more model time.
NEWCOMER_CREDIT_SECONDS = 10.0
_current_job: contextvars.ContextVar["Job | None"] = contextvars.ContextVar("whisper_api_job", default=None)


class Future:
    """A value one thread waits for and the model thread sets."""

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value, self.done = value, True


@dataclass(eq=False)
class Job:
    """One request's standing with the scheduler."""

    name: str
    cancelled: Callable[[], bool] | None
    max_rows: int  # rows of this job decoding at once (its engine's batch size)
    cancelled_error: Callable[[], BaseException] = Cancelled  # what its thread raises once cancelled
    service: float = 0.0  # model seconds counted for fairness
    model_seconds: float = 0.0  # model time spent on this job's work (shared calls split by rows)
    error: BaseException | None = None
    apart: bool = False  # decoded apart from other jobs (a shared call of its failed)
    arrived: float = field(default_factory=time.perf_counter)  # when it came or last handed in work
    created: float = field(default_factory=time.perf_counter)
    handed_in: bool = False  # whether it has handed in any work yet
    encodes: deque["EncodeWork"] = field(default_factory=deque)
    waiting: deque[tuple[GroupKey, RowWork | Rows]] = field(default_factory=deque)
    calls: deque["CallWork"] = field(default_factory=deque)
    # the torch modes watching the job's thread when it began (a checker, a tracer): its work runs
    # under them on the model thread too, as it would have in its own thread
    watchers: tuple[Any, ...] = ()

    def charge(self, seconds: float) -> None:
        self.service += seconds
        self.model_seconds += seconds


@dataclass(eq=False)
class EncodeWork:
    job: Job
    pieces: list[np.ndarray]
    untaken: deque[int]
    outputs: list[torch.Tensor | None]
    future: Future = field(default_factory=Future)


@dataclass(eq=False)
class DecodeWork:
    results: list[Decoded | None]
    remaining: int
    future: Future = field(default_factory=Future)


@dataclass(eq=False)
class CallWork:
    job: Job
    function: Callable[[], Any]
    future: Future = field(default_factory=Future)


class Scheduler:
    def __init__(self, decoder: Decoder, max_batch_rows: int, encoder_rows: int,
                 release_memory: Callable[[], None] | None = None) -> None:
        self.decoder = decoder
        self.max_batch_rows = max_batch_rows
        self.encoder_rows = encoder_rows
        # greedy rows decode in whole calls of the plain loop: where its steps are CUDA graphs
        self.whole_calls = decoder.cuda_graphs
        self.release_memory = release_memory or (lambda: None)
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None  # the model thread, started with the first work
        self._closed = False
        self._arrivals = Arrivals()
        self._jobs: list[Job] = []
        self._groups: dict[GroupKey, DecodingGroup] = {}  # touched by the model thread only
        self._turn = 0
        self.rows_per_step: Counter[int] = Counter()  # decoding steps by rows decoding in them
        self.steps_by_jobs: Counter[int] = Counter()  # decoding steps by jobs sharing them
        self._gathering_since: float | None = None  # when a short graphed call began to wait

    # jobs

    @contextmanager
    def job(self, name: str = "", cancelled: Callable[[], bool] | None = None, max_rows: int | None = None,
            cancelled_error: Callable[[], BaseException] = Cancelled) -> Iterator[Job]:
        """Run the block as a job: the model work its thread submits is scheduled as this job's.
        Once `cancelled()` is true, its work stops and its thread raises `cancelled_error()`."""
        job = Job(name, cancelled, max(1, max_rows or self.max_batch_rows), cancelled_error,
                  watchers=(*_get_current_function_mode_stack(), *_get_current_dispatch_mode_stack()))
        with self._condition:
            active = [other.service for other in self._jobs if other.error is None]
            job.service = max(0.0, min(active) - NEWCOMER_CREDIT_SECONDS) if active else 0.0
            self._jobs.append(job)
            self._arrivals.count += 1
            self._condition.notify_all()
        token = _current_job.set(job)
        try:
            yield job
        finally:
            _current_job.reset(token)
            with self._condition:
                if job.error is None:
                    job.error = Cancelled()  # anything it left is dropped at the next turn
                job.encodes.clear()
                job.calls.clear()
                job.waiting.clear()
                self._condition.notify_all()  # the model thread drops its rows at its next turn

    @property
    def model_thread(self) -> threading.Thread | None:
        """The thread that runs every model call (None until the first work)."""
        return self._thread

    @property
    def jobs_running(self) -> int:
        with self._condition:
            return sum(1 for job in self._jobs if job.error is None)

    @contextmanager
    def _submitting(self) -> Iterator[Job]:
        job = _current_job.get()
        if job is not None:
            yield job
            return
        with self.job("direct call") as job:  # a caller outside any job (tools, tests)
            yield job

    # what jobs submit

    def encode(self, pieces: list[np.ndarray]) -> torch.Tensor:
        with self._submitting() as job:
            work = EncodeWork(job, list(pieces), deque(range(len(pieces))), [None] * len(pieces))
            if not pieces:
                return self.call(lambda: self.decoder.model.encode(self.decoder.model.log_mel([])))
            with self._condition:
                job.encodes.append(work)
                job.arrived, job.handed_in = time.perf_counter(), True
                self._condition.notify_all()
            return self._wait(job, work.future)

    def call(self, function: Callable[[], Any]) -> Any:
        with self._submitting() as job:
            work = CallWork(job, function)
            with self._condition:
                job.calls.append(work)
                job.handed_in = True
                self._condition.notify_all()
            return self._wait(job, work.future)

    def decode(self, encoded: torch.Tensor, request: DecodingRequest, frames: list[int],
               generator: torch.Generator | None = None) -> list[Decoded]:
        return self.decode_rows(encoded, [request] * encoded.shape[0], frames, generator)

    def decode_rows(self, encoded: torch.Tensor, requests: list[DecodingRequest], frames: list[int],
                    generator: torch.Generator | None = None) -> list[Decoded]:
        """Each row with its own request; rows of every kind join the shared steps."""
        if not requests:
            return []
        if any(request.beam_size > 1 and request.temperature == 0 for request in requests):
            return self.call(lambda: Decoder.decode_rows(self.decoder, encoded, requests, frames, generator))
        with self._submitting() as job:
            return self._wait(job, self._enqueue(job, encoded, requests, frames, generator))

    def submit_rows(self, encoded: torch.Tensor, requests: list[DecodingRequest], frames: list[int],
                    generator: torch.Generator | None = None) -> Callable[[], list[Decoded]]:
        """`decode_rows` without waiting: the rows are in line now, decoded whenever the job's
        thread (or any other) waits on the model; calling the returned function waits for them.
        A job's next batch of audio is encoded while its rows decode, and its rows fill the
        places that this batch's finished rows leave (outside a job: decoded at once)."""
        job = _current_job.get()
        if job is None or not requests or any(request.beam_size > 1 and request.temperature == 0
                                              for request in requests):
            results = self.decode_rows(encoded, requests, frames, generator)
            return lambda: results
        future = self._enqueue(job, encoded, requests, frames, generator)
        return lambda: self._wait(job, future)

    def _enqueue(self, job: Job, encoded: torch.Tensor, requests: list[DecodingRequest], frames: list[int],
                 generator: torch.Generator | None) -> Future:
        """The rows in the job's line; the future their results are delivered to."""
        rows = encoded.shape[0]
        generators: list[torch.Generator | None] = [None] * rows
        if any(request.temperature > 0 for request in requests):  # each row its own noise
            seeds = torch.randint(0, 2**62, (rows,), generator=generator).tolist()
            generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        work = DecodeWork([None] * rows, rows)
        with self._condition:
            for row, request in enumerate(requests):
                deliver = self._deliverer(work, row)
                key = GroupKey.of(request, job if job.apart else None)
                job.waiting.append((key, RowWork(job, encoded[row : row + 1], request, frames[row],
                                                 generators[row], deliver)))
            job.arrived, job.handed_in = time.perf_counter(), True
            self._condition.notify_all()
        return work.future

    def _deliverer(self, work: DecodeWork, row: int) -> Callable[[RowWork, Decoded], None]:
        def deliver(_: RowWork, result: Decoded) -> None:
            work.results[row] = result
            work.remaining -= 1
            if work.remaining == 0:
                work.future.set(list(work.results))
        return deliver

    # waiting, and scheduling while waiting

    def _wait(self, job: Job, future: Future) -> Any:
        """Until the model thread has done the work (or the job failed, or its client hung up)."""
        with self._condition:
            self._start_model_thread()
            while True:
                if not future.done and job.error is None and job.cancelled is not None and job.cancelled():
                    job.error = job.cancelled_error()
                    self._condition.notify_all()
                if future.done or job.error is not None:
                    break
                self._condition.wait(POLL_SECONDS)
        if job.error is not None and not future.done:
            raise job.error
        return future.value

    def close(self, timeout: float) -> bool:
        """Ends the model thread after its current turn (the process is about to exit: a thread
        left inside the model then would abort it); True once it has ended, or never started."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _start_model_thread(self) -> None:
        """(Holding the condition.)"""
        if self._closed:
            raise RuntimeError("the model is closed: the server is stopping")
        if self._thread is None or not self._thread.is_alive():
            if self._thread is None:
                atexit.register(_close_at_exit, weakref.ref(self))
            self._thread = threading.Thread(target=_serve, args=(weakref.ref(self), self._condition, self._arrivals),
                                            name=MODEL_THREAD_NAME, daemon=True)
            self._thread.start()

    def _turn_or_wait(self) -> int | None:
        """One turn of the model thread; a turn that breaks (a fault of ours, not a model call's,
        which fails its job) fails the running jobs rather than leaving them waiting for ever.
        With no job at all, nothing is done: the jobs begun so far are returned, and the thread
        waits for the next one without holding the scheduler."""
        try:
            return self._one_turn()
        except Exception as error:  # noqa: BLE001 - the jobs get it
            log.exception("the scheduler failed; the running jobs get the error")
            with self._condition:
                for job in self._jobs:
                    if job.error is None:
                        job.error = error
                self._condition.notify_all()
            return None

    def _one_turn(self) -> int | None:
        """One model call for whichever job is owed it most (None); with no job at all, the count
        of jobs begun so far."""
        with self._condition:
            self._check_cancellations()
            gone = [job for job in self._jobs if job.error is not None]
        for job in gone:
            self._drop(job)
        with self._condition:
            for job in gone:
                self._jobs.remove(job)
            live = self._live_counts()
            candidates = [job for job in self._jobs if job.error is None
                          and (job.calls or job.encodes or job.waiting or live.get(id(job)))]
            if not candidates:
                self._gathering_since = None
                if not self._jobs:
                    return self._arrivals.count
                self._condition.wait(POLL_SECONDS)
                return None
            job = min(candidates, key=lambda candidate: (candidate.service, candidate.model_seconds))
            if job.calls:
                action, involved = self._run_call, [job]
                argument: Any = job.calls.popleft()
            elif job.encodes:
                if self._encoder_still_gathering(job):
                    return None
                argument = self._take_pieces(job)
                action, involved = self._run_encoder, list({work.job: None for work, _ in argument})
            elif self._graphed(job.waiting[0][1] if job.waiting else None):
                encoding = [other for other in candidates if other.encodes and not other.apart]
                if encoding and not job.apart:  # their rows join this call once encoded (a few ms a piece)
                    if self._encoder_still_gathering(job):
                        return None
                    argument = self._take_pieces(min(encoding, key=lambda other: other.service))
                    action, involved = self._run_encoder, list({work.job: None for work, _ in argument})
                elif self._still_arriving(job, self._rows_ready(job), self.max_batch_rows):
                    return None
                else:
                    self._gathering_since = None
                    argument = self._take_graphed_rows(job)
                    action, involved = self._run_graphed_call, list({work.owner: None for work in argument})
            else:
                group = self._group_for(job)
                argument = group
                action, involved = self._run_step, None
        try:
            with self._watched():
                action(argument)
        except Exception as error:  # noqa: BLE001 - it becomes the failing job's error
            self._failed(error, argument, involved)
        return None

    @contextmanager
    def _watched(self) -> Iterator[None]:
        """Under the torch modes that watch the running jobs' threads (`Job.watchers`)."""
        with self._condition:
            modes = {id(mode): mode for job in self._jobs if job.error is None for mode in job.watchers}
        with ExitStack() as stack:
            for mode in modes.values():
                stack.enter_context(mode)
            yield

    def _check_cancellations(self) -> None:
        for job in self._jobs:
            if job.error is None and job.cancelled is not None and job.cancelled():
                job.error = job.cancelled_error()
                log.info("job %s: its client hung up; its rows leave the batch", job.name)

    def _live_counts(self) -> Counter[int]:
        """Rows still decoding, by job."""
        return Counter(id(work.owner) for group in self._groups.values() for work in group.works if not work.finished)


    # calls

    def _run_call(self, work: CallWork) -> None:
        started = time.perf_counter()
        value = work.function()
        work.job.charge(time.perf_counter() - started)
        with self._condition:
            work.future.set(value)
            self._condition.notify_all()

    def _take_pieces(self, first: Job) -> list[tuple[EncodeWork, int]]:
        """Up to `encoder_rows` pieces: `first`'s, then other jobs' (least served first)."""
        others = sorted((job for job in self._jobs if job is not first and job.error is None and not job.apart),
                        key=lambda job: job.service)
        taken: list[tuple[EncodeWork, int]] = []
        for job in [first] + ([] if first.apart else others):
            for work in job.encodes:
                while work.untaken and len(taken) < self.encoder_rows:
                    taken.append((work, work.untaken.popleft()))
            while job.encodes and not job.encodes[0].untaken:
                job.encodes.popleft()  # fully taken: finished once its outputs are in
            if len(taken) >= self.encoder_rows:
                break
        return taken

    def _run_encoder(self, taken: list[tuple[EncodeWork, int]]) -> None:
        started = time.perf_counter()
        encoded = Decoder.encode_audio(self.decoder, [work.pieces[index] for work, index in taken])
        elapsed = time.perf_counter() - started
        with self._condition:
            for row, (work, index) in enumerate(taken):
                work.outputs[index] = encoded[row : row + 1]
                work.job.charge(elapsed / len(taken))
                if all(output is not None for output in work.outputs):
                    outputs = work.outputs
                    work.future.set(torch.cat(outputs) if len(outputs) > 1 else outputs[0])
            self._condition.notify_all()

    # decoding: whole graphed calls (CUDA, greedy)

    def _graphed(self, item: RowWork | Rows | None) -> bool:
        """Whether a waiting row decodes in a whole call of the plain loop's CUDA-graphed steps
        (greedy, no word times): one launch a step, 0.6 ms on an H200 against about 1.8 ms for a
        shared step whose batch changes as rows join and leave. Rows of every job are taken
        into each call, so jobs still share batches; they join between calls (a call of 128
        tokens takes about 0.1 s), not between steps."""
        if not self.whole_calls or not isinstance(item, RowWork):
            return False
        request = item.request
        return request.temperature == 0 and not request.word_timestamps

    def _still_arriving(self, first: Job, ready: int, capacity: int) -> bool:
        """Whether a batched call for `first` (a whole graphed call, or an encoder call of several
        pieces) that would start with `ready` items of `capacity` should wait for requests still
        arriving (called holding the condition, which the wait releases). A call short of a full
        batch first lets the other threads run for GATHER_YIELD_SECONDS, then waits while a job
        that came less than GATHER_LIMIT_SECONDS ago has handed in nothing yet, or another job
        arrived or handed in work less than GATHER_QUIET_SECONDS ago; GATHER_LIMIT_SECONDS at most.
        A request alone loses the yield only (1 ms of a call of about 70 ms on an H200)."""
        if first.apart or ready >= capacity:
            return False
        now = time.perf_counter()
        if self._gathering_since is None:
            self._gathering_since = now
            self._condition.wait(GATHER_YIELD_SECONDS)
            return True
        others = [job for job in self._jobs if job is not first and job.error is None and not job.apart]
        quiet = now - max((job.arrived for job in others), default=float("-inf"))
        coming = any(not job.handed_in and now - job.created < GATHER_LIMIT_SECONDS for job in others)
        if (quiet >= GATHER_QUIET_SECONDS and not coming) or now - self._gathering_since >= GATHER_LIMIT_SECONDS:
            return False
        self._condition.wait(max(GATHER_QUIET_SECONDS - quiet, GATHER_YIELD_SECONDS))
        return True

    def _encoder_still_gathering(self, first: Job) -> bool:
        """Whether an encoder call of several pieces (on a GPU) waits for requests still arriving."""
        if self.encoder_rows > 1 and self._still_arriving(first, self._pieces_ready(), self.encoder_rows):
            return True
        self._gathering_since = None
        return False

    def _rows_ready(self, first: Job) -> int:
        """Waiting rows that could share a whole call with `first`'s next one."""
        same_call = self._same_call(first)
        return sum(1 for job in self._jobs if job.error is None and not job.apart
                   for item_key, item in job.waiting if same_call(item_key, item))

    def _pieces_ready(self) -> int:
        """Pieces waiting to be encoded, of jobs that share calls."""
        return sum(len(work.untaken) for job in self._jobs if job.error is None and not job.apart
                   for work in job.encodes)

    @staticmethod
    def _same_call(first: Job) -> Callable[[GroupKey, RowWork | Rows], bool]:
        """Whether a waiting item can share a whole call with `first`'s next row: a row with the
        same request."""
        key, head = first.waiting[0]
        return lambda item_key, item: item_key == key and isinstance(item, RowWork) and item.request == head.request

    def _take_graphed_rows(self, first: Job) -> list[RowWork]:
        """Up to `max_batch_rows` waiting rows with the same request as `first`'s next one, taken
        round robin across jobs (least served first), each job up to its own row limit."""
        same_call = self._same_call(first)
        jobs = [first] + sorted((job for job in self._jobs if job is not first and job.error is None
                                 and not job.apart and not first.apart), key=lambda job: job.service)
        taken: list[RowWork] = []
        counts = dict.fromkeys((id(job) for job in jobs), 0)
        progress = True
        while progress and len(taken) < self.max_batch_rows:
            progress = False
            for job in jobs:
                if len(taken) >= self.max_batch_rows or counts[id(job)] >= job.max_rows:
                    continue
                for index, (item_key, item) in enumerate(job.waiting):
                    if same_call(item_key, item):
                        del job.waiting[index]
                        taken.append(item)
                        counts[id(job)] += 1
                        progress = True
                        break
        return taken

    def _run_graphed_call(self, taken: list[RowWork]) -> None:
        rows = len(taken)
        # two captured graphs serve every call: one row, or the batch's full size (padded)
        bucket = 1 if rows == 1 else max(self.max_batch_rows, rows)
        encoded = [work.encoded for work in taken] + [taken[0].encoded] * (bucket - rows)
        frames = [work.frames for work in taken] + [taken[0].frames] * (bucket - rows)
        # no job's cancellation ends a call the others share: a cancelled job's results are dropped
        request = replace(taken[0].request, cancellation=None)
        started = time.perf_counter()
        results = Decoder.decode(self.decoder, torch.cat(encoded), request, frames)[:rows]
        elapsed = time.perf_counter() - started
        steps = max(len(result.tokens) - request.carried for result in results) + 1
        owners = Counter(id(work.owner) for work in taken)
        self.rows_per_step[rows] += steps
        self.steps_by_jobs[len(owners)] += steps
        with self._condition:
            for work in taken:
                work.owner.charge(elapsed / rows)
            self._deliver([(work, result) for work, result in zip(taken, results)])

    # decoding: shared steps

    def _group_for(self, job: Job) -> DecodingGroup:
        """The group to step for `job`: where its next waiting row goes, else one holding its rows."""
        if job.waiting:
            key = job.waiting[0][0]
        else:
            keys = [key for key, group in self._groups.items()
                    if any(work.owner is job and not work.finished for work in group.works)]
            self._turn += 1
            key = keys[self._turn % len(keys)]
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = DecodingGroup(self.decoder, key)
        return group

    def _run_step(self, group: DecodingGroup) -> None:
        self._admit(group)
        live = group.live()
        if not live:  # nothing could join it (the batch is full of other groups' rows): step one of those
            group.compact(force=True)
            if not group.works:
                self._groups.pop(group.key, None)
            others = [other for other in self._groups.values() if other.live()]
            if not others:
                return
            group = max(others, key=lambda other: len(other.live()))
            live = group.live()
        started = time.perf_counter()
        finished = group.step()
        elapsed = time.perf_counter() - started
        results = self._ended(group, finished)
        owners = Counter(id(work.owner) for work in live)
        jobs = {id(work.owner): work.owner for work in live}
        self.rows_per_step[len(live)] += 1
        self.steps_by_jobs[len(jobs)] += 1
        with self._condition:
            for key, count in owners.items():
                jobs[key].charge(elapsed * count / len(live))
            self._deliver(results)
        group.compact()

    @staticmethod
    def _ended(group: DecodingGroup, finished: list[RowWork]) -> list[tuple[RowWork, Decoded]]:
        """The finished rows' results, but for rows that carry on in their place instead."""
        results = []
        for work in finished:
            result = group.result(work)
            continuation = work.request.continuation
            if continuation is not None and work.owner.error is None:
                after = continuation.after(result)
                if not isinstance(after, Decoded):
                    group.carry_on(work, after)
                    continue
                result = after
            results.append((work, result))
        return results

    def _deliver(self, results: list[tuple[RowWork, Decoded]]) -> None:
        for work, result in results:
            if not work.delivered and work.owner.error is None:
                work.delivered = True
                work.deliver(work, result)
        if results:  # waking every waiting thread at every step would cost the step its time
            self._condition.notify_all()

    def _admit(self, group: DecodingGroup) -> None:
        """Waiting rows of `group`'s kind join it, each job up to its fair share of the batch;
        rows of a job over its share are parked to make room."""
        with self._condition:
            wanting = [job for job in sorted(self._jobs, key=lambda job: job.service)
                       if job.error is None and any(key == group.key for key, _ in job.waiting)]
            if not wanting:
                return
            held = sum(len(other) for other in self._groups.values())
            if held >= self.max_batch_rows:
                for other in self._groups.values():
                    other.compact(force=True)
            shares = self._shares()
            free = self.max_batch_rows - sum(len(other) for other in self._groups.values())
            if free <= 0:
                self._park_over_share(group, shares, wanting)
                free = self.max_batch_rows - sum(len(other) for other in self._groups.values())
            admitted: list[tuple[Job, RowWork | Rows]] = []
            live = self._live_counts()  # finished rows still in a batch hold no place a job needs
            counts = {id(job): live.get(id(job), 0) for job in wanting}
            progress = True
            while free > 0 and progress:
                progress = False
                for job in wanting:
                    if free <= 0:
                        break
                    if counts[id(job)] >= min(shares.get(id(job), 0), job.max_rows):
                        continue
                    item = self._pop_waiting(job, group.key)
                    if item is None:
                        continue
                    size = len(item.works) if isinstance(item, Rows) else 1
                    admitted.append((job, item))
                    counts[id(job)] += size
                    free -= size
                    progress = True
        fresh: dict[tuple[int, ...], list[RowWork]] = {}
        parts: list[Rows] = []
        for _, item in admitted:
            if isinstance(item, Rows):
                parts.append(item)
            else:
                fresh.setdefault(item.request, []).append(item)  # rows of one prefix prefill together
        try:
            for works in fresh.values():
                parts.append(group.prefilled(works))
        except Exception:
            with self._condition:  # back in line: the failure is handled as the step's
                for job, item in reversed(admitted):
                    job.waiting.appendleft((group.key, item))
            raise
        group.join(parts)
        finished = [work for part in parts for work in part.works if work.finished and not work.delivered]
        if finished:
            results = [(work, group.result(work)) for work in finished]
            with self._condition:
                self._deliver(results)

    def _pop_waiting(self, job: Job, key: GroupKey) -> RowWork | Rows | None:
        for index, (item_key, item) in enumerate(job.waiting):
            if item_key == key:
                del job.waiting[index]
                return item
        return None

    def _shares(self) -> dict[int, int]:
        """Each job's fair share of the batch's rows: even, up to what it has to decode."""
        live = self._live_counts()
        demand = {id(job): min(job.max_rows, live.get(id(job), 0) + len(job.waiting))
                  for job in self._jobs if job.error is None}
        shares = dict.fromkeys(demand, 0)
        left = self.max_batch_rows
        while left > 0:
            hungry = [key for key in shares if shares[key] < demand[key]]
            if not hungry:
                break
            for key in hungry:
                if left == 0:
                    break
                shares[key] += 1
                left -= 1
        return shares

    def _park_over_share(self, group: DecodingGroup, shares: dict[int, int], wanting: list[Job]) -> None:
        live = self._live_counts()
        needed = sum(1 for job in wanting if live.get(id(job), 0) < min(shares[id(job)], job.max_rows))
        if not needed:
            return
        # the newest rows of the jobs most over their share, from whichever group holds them
        parked: dict[GroupKey, list[RowWork]] = {}
        count = 0
        for job in sorted(self._jobs, key=lambda job: -job.service):
            over = live.get(id(job), 0) - shares.get(id(job), 0)
            if over <= 0:
                continue
            rows = [(other, work) for other in self._groups.values() for work in other.works
                    if work.owner is job and not work.finished]
            for other, work in reversed(rows[-over:]):
                if count >= needed:
                    break
                parked.setdefault(other.key, []).append(work)
                count += 1
        for key, works in parked.items():
            bundle = self._groups[key].park(works)
            for position in reversed(range(len(bundle.works))):
                part = bundle.taken([position]) if len(bundle.works) > 1 else bundle
                part.works[0].owner.waiting.appendleft((key, part))

    # failures

    def _drop(self, job: Job) -> None:
        """`job`'s rows leave every batch (it failed, was cancelled or has ended)."""
        for key, group in list(self._groups.items()):
            try:
                group.drop(job)
            except Exception:  # noqa: BLE001 - a batch that cannot even shrink is started afresh
                log.exception("dropping a job's rows failed; the batch is decoded again")
                self._restart(group)
            if not group.works:
                self._groups.pop(key, None)

    def _restart(self, group: DecodingGroup) -> None:
        """The group's rows back in line, from their first token, each job apart from the others."""
        works = list(group.works)
        group.batch = None
        self._groups.pop(group.key, None)
        with self._condition:
            for work in reversed(works):
                job = work.owner
                if job.error is None:
                    work.restart()
                    job.apart = True
                    job.waiting.appendleft((GroupKey.of(work.request, job), work))

    def _failed(self, error: Exception, argument: Any, involved: list[Job] | None) -> None:
        self.release_memory()
        if isinstance(argument, DecodingGroup):
            with self._condition:
                waiting = [job for job in self._jobs if any(key == argument.key for key, _ in job.waiting)]
            involved = list({job: None for job in [work.owner for work in argument.works] + waiting})
        involved = [job for job in (involved or []) if job.error is None]
        if len(involved) <= 1 or all(job.apart for job in involved):
            log.warning("a model call failed; its job gets the error: %r", error)
            with self._condition:
                for job in involved:
                    job.error = error
                self._condition.notify_all()
            if isinstance(argument, DecodingGroup):
                self._restart(argument)  # other jobs' rows in it (none, when apart) go on
            return
        log.warning("a model call shared by %d jobs failed (%r); each is decoded apart from now on",
                    len(involved), error)
        with self._condition:
            for job in involved:
                job.apart = True
                job.waiting = deque((GroupKey.of(item.works[0].request if isinstance(item, Rows) else item.request,
                                                 job), item) for _, item in job.waiting)
            if isinstance(argument, list) and argument and isinstance(argument[0], RowWork):
                for work in reversed(argument):  # a graphed call's rows: back in line, each job apart
                    work.owner.waiting.appendleft((GroupKey.of(work.request, work.owner), work))
            elif isinstance(argument, list):  # encoder pieces: back in line
                for work, index in reversed(argument):
                    work.untaken.appendleft(index)
                    if work not in work.job.encodes:
                        work.job.encodes.appendleft(work)
        if isinstance(argument, DecodingGroup):
            self._restart(argument)


@dataclass
class Arrivals:
    """Jobs begun so far: what the idle model thread waits on without holding its scheduler."""

    count: int = 0


def _serve(reference: "weakref.ref[Scheduler]", condition: threading.Condition, arrivals: Arrivals) -> None:
    """The model thread: turns of the scheduler's loop while the scheduler lives. It holds the
    scheduler only for a turn and waits for work without it, so an engine nobody uses any more
    is freed, and this thread ends."""
    _leave_stop_signals_to_the_main_thread()
    with torch.no_grad():  # not inference mode: torch-directml cannot move its tensors in it
        while True:
            scheduler = reference()
            if scheduler is None or scheduler._closed:
                return
            idle_at = scheduler._turn_or_wait()
            del scheduler
            if idle_at is not None:
                with condition:
                    if arrivals.count == idle_at:
                        condition.wait(IDLE_SECONDS)


def _leave_stop_signals_to_the_main_thread() -> None:
    """POSIX delivers a signal sent to the process to any thread that does not block it; Python
    runs its handlers in the main thread only. The model thread (and the compute threads it
    starts, which inherit its mask) blocks the stop signals, so that the kernel hands them to a
    thread that is not busy inside the model."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _close_at_exit(reference: "weakref.ref[Scheduler]") -> None:
    scheduler = reference()
    if scheduler is not None:
        scheduler.close(EXIT_WAIT_SECONDS)


class ScheduledDecoder(Decoder):
    """The decoder as jobs see it: every call goes through the scheduler, which batches it with
    other jobs' work; the scheduler runs the plain decoder's parts."""

    def __init__(self, model: LoadedModel, max_batch_rows: int, encoder_rows: int,
                 release_memory: Callable[[], None] | None = None) -> None:
        super().__init__(model)
        self.scheduler = Scheduler(self, max_batch_rows, encoder_rows, release_memory)

    def decode(self, encoded: torch.Tensor, request: DecodingRequest, frames: list[int],
               generator: torch.Generator | None = None) -> list[Decoded]:
        return self.scheduler.decode(encoded, request, frames, generator)

    def decode_rows(self, encoded: torch.Tensor, requests: list[DecodingRequest], frames: list[int],
                    generator: torch.Generator | None = None) -> list[Decoded]:
        return self.scheduler.decode_rows(encoded, requests, frames, generator)

    def submit_rows(self, encoded: torch.Tensor, requests: list[DecodingRequest], frames: list[int],
                    generator: torch.Generator | None = None) -> Callable[[], list[Decoded]]:
        return self.scheduler.submit_rows(encoded, requests, frames, generator)

    def language_probabilities(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.scheduler.call(lambda: Decoder.language_probabilities(self, encoded))

    def exclusive(self, function: Callable[[], T]) -> T:
        return self.scheduler.call(function)

    def encode_audio(self, pieces: list[np.ndarray]) -> torch.Tensor:
        return self.scheduler.encode(pieces)
