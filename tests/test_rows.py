"""The decoding loop's rows on the host: a row whose text locks into a loop is stopped there with
its score so far; finished rows leave the batch without losing their tokens or scores; ordinary
repetition is left to decode."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_api.inference.rows import LiveRows
from whisper_api.repetition import loops_at_the_end

END_OF_TEXT, TIMESTAMP_BEGIN = 50257, 50364


def feed(rows: LiveRows, per_row: list[list[int]], sums: np.ndarray, engine) -> None:
    fails_compression = engine.decoder.compression_check(2.4)
    for step in range(max(len(tokens) for tokens in per_row)):
        rows.record(np.array([tokens[step] if step < len(tokens) else END_OF_TEXT for tokens in per_row])[rows.in_batch])
        rows.stop_loops(lambda: sums[: len(rows.in_batch)], fails_compression)


def test_a_looping_row_stops_at_its_loop_and_keeps_its_score_so_far(engine):
    phrase = engine.model.tokenizer.encode("ありがとうございます。", add_special_tokens=False)
    looping = [TIMESTAMP_BEGIN] + phrase * 12
    speaking = [TIMESTAMP_BEGIN] + list(range(100, 160))
    rows = LiveRows(2, END_OF_TEXT, TIMESTAMP_BEGIN)
    feed(rows, [looping, speaking], np.array([-3.0, -5.0]), engine)
    assert rows.looped == [True, False]
    assert len(rows.tokens[0]) < len(looping)  # stopped once the loop was certain
    assert rows.tokens[0] == looping[: len(rows.tokens[0])]
    assert rows.sums[0] == -3.0
    assert rows.tokens[1] == speaking  # the other row decoded on
    rows.finish_sums(np.array([-9.0, -7.0]))
    assert rows.sums == [-3.0, -7.0]  # a stopped row's score is not overwritten


def test_finished_rows_leave_the_batch_with_their_tokens_and_scores():
    rows = LiveRows(4, END_OF_TEXT, TIMESTAMP_BEGIN)
    rows.record(np.array([1, END_OF_TEXT, 2, 3]))
    assert rows.worth_compacting()  # a quarter of the batch finished
    keep = rows.compact(np.array([-1.0, -2.0, -3.0, -4.0]))
    assert keep.tolist() == [0, 2, 3]
    rows.record(np.array([END_OF_TEXT, 4, 5]))
    rows.record(np.array([END_OF_TEXT, END_OF_TEXT, END_OF_TEXT]))
    assert rows.all_finished()
    rows.finish_sums(np.array([-1.5, -3.5, -4.5]))
    assert rows.tokens == [[1], [], [2, 4], [3, 5]]
    assert rows.sums == [-1.5, -2.0, -3.5, -4.5]


@pytest.mark.parametrize("text", [" Go! Go! Go! Go! Go! Go! Go!", " No, no, no, no, no, no, no."])
def test_a_repeated_phrase_that_passes_the_compression_check_decodes_on(engine, text):
    """People repeat themselves: a row is stopped only on a loop that fails the check anyway."""
    repeated = [TIMESTAMP_BEGIN] + engine.model.tokenizer.encode(text, add_special_tokens=False)
    rows = LiveRows(1, END_OF_TEXT, TIMESTAMP_BEGIN)
    feed(rows, [repeated + [TIMESTAMP_BEGIN + 150]], np.array([-1.0]), engine)
    assert rows.looped == [False]
    assert rows.tokens[0] == repeated + [TIMESTAMP_BEGIN + 150]


@pytest.mark.parametrize("text", ["はい、はい、はい。", "もしもし、聞こえますか。もしもし。", "ラララ、ラララ、ラララ。"])
def test_ordinary_repetition_is_no_loop(engine, text):
    assert not loops_at_the_end(engine.model.tokenizer.encode(text, add_special_tokens=False))


def test_a_loop_is_found_only_at_the_end(engine):
    phrase = engine.model.tokenizer.encode("ありがとうございます。", add_special_tokens=False)
    other = engine.model.tokenizer.encode("明日の会議は午後から始まります。", add_special_tokens=False)
    assert loops_at_the_end(other + phrase * 6)
    assert not loops_at_the_end(phrase * 6 + other)
