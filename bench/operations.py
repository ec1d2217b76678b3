"""Operations per generated token: how many aten operations our decoding loop dispatches for each
token it generates, on each path (greedy, beam search, sampling, word timestamps), counted with a
TorchDispatchMode on the CPU over one 28 s chunk of Japanese speech. On a GPU every operation is a
launch (on DirectML an expensive one), so this is the loop's overhead, whatever the device.

    python -m bench.operations [--model DIR]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from tests.support.speech import MEETING_SENTENCES, concatenate, japanese_speech  # noqa: E402
from tests.support.whisper_checkpoint import ensure_whisper_base  # noqa: E402
from whisper_api.inference.decoder import Decoder, DecodingRequest  # noqa: E402
from whisper_api.inference.model import SAMPLE_RATE, WINDOW_FRAMES, LoadedModel  # noqa: E402
from whisper_api.scheduler import ScheduledDecoder  # noqa: E402


class OperationCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


PATHS = {
    "greedy": DecodingRequest((), temperature=0.0),
    "beam search (2)": DecodingRequest((), beam_size=2),
    "sampling (0.4)": DecodingRequest((), temperature=0.4),
    "greedy, word timestamps": DecodingRequest((), word_timestamps=True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="transformers checkpoint (default: the tests' Whisper base)")
    parser.add_argument("--dtype", choices=("float32", "int8"), default="float32")
    arguments = parser.parse_args(argv)
    model = LoadedModel.load(arguments.model or str(ensure_whisper_base()), torch.device("cpu"), torch.float32, "sdpa",
                             int8_weights=arguments.dtype == "int8")
    decoder = Decoder(model)
    audio, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[:6]], gap_seconds=0.8)
    tokens = model.tokens
    prefix = (tokens.start_of_transcript, tokens.languages["ja"], tokens.transcribe)
    print(f"model {model.name}; {arguments.dtype}; {model.model.config.decoder_layers} decoder layers; one {len(audio[: 28 * SAMPLE_RATE]) / SAMPLE_RATE:.0f} s chunk")
    print("| path | generated tokens | operations | per token | most frequent |")
    print("| --- | --- | --- | --- | --- |")
    scheduled = ScheduledDecoder(model, max_batch_rows=8, encoder_rows=1)
    with torch.no_grad():
        encoded = model.encode(model.log_mel([audio[: 28 * SAMPLE_RATE]]))
        for name, request in PATHS.items():
            request = DecodingRequest(prefix, request.temperature, request.beam_size, request.word_timestamps)
            for way, through in (("", decoder), (", through the scheduler", scheduled)):
                generator = torch.Generator().manual_seed(0)
                with OperationCounter() as counter:
                    result = through.decode(encoded, request, [WINDOW_FRAMES], generator)[0]
                report(name + way, result, counter)
        # two rows a step apart share every step: positions per row
        request = DecodingRequest(prefix)
        with OperationCounter() as counter:
            results, other = concurrent_rows(scheduled, encoded, request)
        counter.counts.update(other.counts)
        report("greedy, two jobs' rows a few steps apart, sharing the steps", results, counter)
    return 0


def report(name: str, results, counter: OperationCounter) -> None:
    results = results if isinstance(results, list) else [results]
    generated = sum(len(result.tokens) + 1 for result in results)  # and end-of-text
    total = sum(counter.counts.values())
    top = ", ".join(f"{op} {count / generated:.0f}" for op, count in counter.counts.most_common(4))
    print(f"| {name} | {generated} | {total} | {total / generated:.0f} | {top} |", flush=True)


def concurrent_rows(scheduled: ScheduledDecoder, encoded: torch.Tensor, request: DecodingRequest
                    ) -> tuple[list, OperationCounter]:
    """The same chunk for two jobs, the second sent once the first has decoded a few steps. Each
    thread counts what it dispatches (whichever waits schedules both jobs' steps)."""
    import threading

    results: list = []
    other = OperationCounter()
    scheduler = scheduled.scheduler
    steps = sum(scheduler.rows_per_step.values())

    def second() -> None:
        while sum(scheduler.rows_per_step.values()) < steps + 3:
            threading.Event().wait(0.001)
        with torch.no_grad(), other:
            results.append(scheduled.decode(encoded, request, [WINDOW_FRAMES])[0])

    thread = threading.Thread(target=second)
    thread.start()
    results.append(scheduled.decode(encoded, request, [WINDOW_FRAMES])[0])
    thread.join()
    return results, other


if __name__ == "__main__":
    sys.exit(main())
