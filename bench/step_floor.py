"""How close our decoding step is to the time this machine takes to read the bytes it must read.

Per batch size: the forward step in steady state (the same cache, step after step, as decoding
runs), the same step with the output projection left out and with the attention left out (what
each costs in place), the bytes a step reads (projection weights, the encoder's keys and values
of every row, the self-attention's window), and the time this machine takes to read as many
bytes from the same tensors (a maximum over each one's bytes, repeated the same way). On a CPU
a step is bound by these reads: a step much slower than its read time has work to gain, one
close to it has none left at that dtype. Whisper base, greedy positions 40 to 64.

    python -m bench.step_floor [--dtypes float32 int8] [--rows 1 8 16] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from bench.report import write_report  # noqa: E402
from bench.step_profile import median_seconds  # noqa: E402

FRAMES = 1500
POSITION = 40
REACH = 64
REPEATS = 60


def milliseconds(function: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median of `repeats` calls after ten to settle."""
    return median_seconds(function, repeats, warm_up=10) * 1000


def weight_tensors(projection) -> list[torch.Tensor]:
    """The tensors a projection reads: its float weight, or its int8 weight unpacked (same bytes)."""
    packed = getattr(projection, "packed", None)
    if packed is not None and not isinstance(packed, torch.Tensor):  # int8: a packed parameter
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weight, _ = torch.ops.quantized.linear_unpack(packed)
        return [weight.int_repr()]
    return [projection.weight]


def read_set(forward, cache) -> list[torch.Tensor]:
    """Every tensor one step reads in bulk: the projections' weights, the encoder keys and values,
    and the self-attention window of the cache."""
    tensors = weight_tensors(forward.output)
    for layer in forward.layers:
        for name in ("qkv", "self_out", "cross_query", "cross_out", "fc1", "fc2"):
            tensors += weight_tensors(getattr(layer, name))
    keys, values, _ = cache.attended(REACH)
    return tensors + cache.cross_keys + cache.cross_values + keys + values


def as_words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as 32-bit integers (a view): one vectorised reduction reads any dtype at
    the same speed, and no bit pattern is a slow floating-point case."""
    return tensor.view(torch.int32)


def measure(forward, dtype: torch.dtype, rows: int) -> dict:
    encoded = torch.randn(rows, FRAMES, forward.width).to(dtype)
    cache = forward.new_cache(encoded, 448)
    tokens = torch.full((rows,), 50258)
    position = torch.tensor([POSITION])

    def step() -> object:
        return forward.step(tokens, position, cache, reach=REACH)

    whole = milliseconds(step)
    output, attend = forward.output, forward.attend
    forward.output = lambda hidden: hidden
    without_output = milliseconds(step)
    forward.output = output
    forward.attend = lambda query, keys, values, attn_mask=None: query
    without_attention = milliseconds(step)
    forward.attend = attend
    tensors = read_set(forward, cache)
    words = [as_words(tensor) for tensor in tensors]
    read = milliseconds(lambda: [word.amax() for word in words], REPEATS // 2)
    megabytes = sum(tensor.numel() * tensor.element_size() for tensor in tensors) / 1e6
    return {"rows": rows, "step": whole, "output": whole - without_output, "attention": whole - without_attention,
            "megabytes": megabytes, "read": read}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "int8"])
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args(argv)

    from tests.support.whisper_checkpoint import ensure_whisper_base
    from whisper_api.config import ModelSettings
    from whisper_api.engine import Engine

    lines = [f"decoding step against reading its bytes, Whisper base, CPU, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}; medians of {REPEATS} steady-state steps", "",
             "| dtype | rows | step ms | output projection ms | attention ms | MB read a step | "
             "read time ms | step / read | ms a row |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in arguments.dtypes:
        engine = Engine.load(ModelSettings(name=str(ensure_whisper_base()), device="cpu", dtype=name, warmup=False))
        forward = engine.decoder.forward
        with torch.no_grad():
            for rows in arguments.rows:
                found = measure(forward, engine.model.dtype, rows)
                lines.append(f"| {name} | {rows} | {found['step']:.2f} | {found['output']:.2f} | "
                             f"{found['attention']:.2f} | {found['megabytes']:.0f} | {found['read']:.2f} | "
                             f"{found['step'] / found['read']:.2f} | {found['step'] / rows:.2f} |")
                print(lines[-1], flush=True)
        del engine
    write_report("\n".join(lines), arguments.output, "step-floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
