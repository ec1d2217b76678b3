"""The DirectML rules (tests/support/directml_rules.py) hold over every path a request can take.

First the checker itself on small hand-made tensor code: each rule fires, clean code passes. Then
the real model, loaded on the DirectML stand-in's device, under the checker through each long-form
strategy, word timestamps, logprobs, a prompt, a temperature fallback and beam search. Each (path, rule)
pair is its own test, so a decoder change shows exactly which rule it fixed or broke.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch

from tests.support.directml_doubles import use_directml_double
from tests.support.directml_rules import FLOAT64, FORBIDDEN_OPERATOR, FORBIDDEN_OPERATORS, INFERENCE_MODE, RULES, DirectMLRules
from tests.support.speech import JAPANESE_SENTENCES, MEETING_SENTENCES, character_error_rate, concatenate, japanese_speech
from whisper_api.config import STRATEGIES, ModelSettings
from whisper_api.engine import Engine
from whisper_api.transcript import Transcript, TranscriptionJob

# ------------------------------------------------------------------------------ the checker itself


def violated_rules(code) -> set[tuple[str, str]]:
    with DirectMLRules() as rules:
        code()
    return {(violation.rule, violation.operator) for violation in rules.violations()}


@pytest.mark.parametrize(
    ("operator", "code"),
    [
        ("repeat_interleave", lambda x: x.repeat_interleave(2, dim=0)),
        ("repeat_interleave", lambda x: torch.repeat_interleave(x, torch.tensor([1, 2]), dim=0)),
        ("multinomial", lambda x: torch.multinomial(x.softmax(-1), 1)),
        ("cumprod", lambda x: x.cumprod(-1)),
        ("count_nonzero", lambda x: torch.count_nonzero(x)),
        ("_embedding_bag", lambda x: torch.nn.functional.embedding_bag(torch.tensor([[0, 1]]), x)),
        ("upsample_nearest1d", lambda x: torch.nn.functional.interpolate(x.unsqueeze(0), scale_factor=2.0)),
        ("eye", lambda x: torch.eye(3)),
    ],
)
def test_each_forbidden_operator_is_a_violation(operator, code):
    x = torch.rand(2, 3)
    assert violated_rules(lambda: code(x)) == {(FORBIDDEN_OPERATOR, operator)}


@pytest.mark.parametrize(
    "code",
    [
        lambda x: x.double(),
        lambda x: torch.tensor([0.5], dtype=torch.float64),
        lambda x: torch.arange(3, dtype=torch.float64),
        lambda x: x.to(torch.float64).sum(),
    ],
)
def test_a_float64_tensor_is_a_violation(code):
    x = torch.rand(2, 3)
    found = violated_rules(lambda: code(x))
    assert found and {rule for rule, _ in found} == {FLOAT64}


def test_any_operation_under_inference_mode_is_a_violation():
    x = torch.rand(2, 3)

    def under_inference_mode():
        with torch.inference_mode():
            (x + 1).to("cpu")

    found = violated_rules(under_inference_mode)
    assert (INFERENCE_MODE, "add") in found and {rule for rule, _ in found} == {INFERENCE_MODE}


def test_a_violation_says_where_it_happened():
    with DirectMLRules() as rules:
        torch.eye(2)
    (violation,) = rules.violations()
    assert violation.count == 1
    assert violation.locations[0].startswith("test_directml_rules.py:")
    assert "eye" in rules.report() and FORBIDDEN_OPERATORS["eye"] in rules.report()


def test_decoding_code_that_keeps_the_rules_passes():
    """What a DirectML-safe decoder does: no_grad, float32, index_select for beams, Gumbel-max sampling."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 51865, generator=generator)
    embedding = torch.nn.Embedding(51865, 16)

    def decode_step():
        with torch.no_grad():
            log_probabilities = torch.log_softmax(logits / 0.4, dim=-1)
            noise = torch.rand(logits.shape, generator=generator).clamp_min(1e-10)
            sampled = (log_probabilities - torch.log(-torch.log(noise))).argmax(dim=-1)  # Gumbel-max
            scores, best = log_probabilities.topk(2, dim=-1)
            beams = torch.tensor([0, 0, 1, 1]).index_select(0, torch.tensor([1, 0, 3, 2]))
            suppressed = logits.masked_fill(torch.zeros_like(logits, dtype=torch.bool), float("-inf"))
            hidden = embedding(sampled).unsqueeze(0)
            attention = torch.nn.functional.scaled_dot_product_attention(hidden, hidden, hidden)
            torch.gather(log_probabilities, 1, best).sum(-1).cumsum(0)
            positions = (best.float() * 0.02).tolist()
            return sampled, beams, suppressed, attention, positions

    assert violated_rules(decode_step) == set()


# ------------------------------------------------------------------ the real model, every request path


@dataclass(frozen=True)
class RequestPath:
    """One way a request reaches the model: engine settings and the job."""

    settings: dict = field(default_factory=dict)  # ModelSettings fields besides the model
    long_audio: bool = False
    job: dict = field(default_factory=dict)  # TranscriptionJob fields besides the samples
    quality: dict = field(default_factory=dict)  # QualityOptions fields the engine is given
    readable: bool = True  # False where the text is sampled at temperature 1.0 (forced fallback)


LONG_FORM_STRATEGIES = tuple(strategy for strategy in STRATEGIES if strategy != "auto")
REQUEST_PATHS = {
    **{f"long-form {strategy}": RequestPath({"strategy": strategy}, long_audio=True) for strategy in LONG_FORM_STRATEGIES},
    "word timestamps": RequestPath(job={"word_timestamps": True}),
    "logprobs": RequestPath(job={"logprobs": True}),  # include[]=logprobs: one more teacher-forced pass
    "prompt": RequestPath(job={"prompt": "会議の記録です。"}),
    "sampling": RequestPath(job={"temperature": 0.4}),  # a temperature above 0 samples
    # thresholds no text meets: every temperature of the schedule is tried, 0.0 to 1.0
    "temperature fallback": RequestPath(quality={"logprob_threshold": 0.0}, readable=False),
    "beam search": RequestPath({"beam_size": 2}),
    "beam search with word timestamps": RequestPath({"beam_size": 2}, job={"word_timestamps": True}),
}

def path_rule_cases():
    """Every rule on every path, none expected to fail: the own decoding loop replaced
    transformers' generate (float64 token positions, repeat_interleave for beams, multinomial for
    sampling) and the engine runs under no_grad."""
    for path in REQUEST_PATHS:
        for rule in RULES:
            yield pytest.param(path, rule, id=f"{path}-{rule}")


@dataclass
class Checked:
    transcript: Transcript
    rules: DirectMLRules


@pytest.fixture(scope="module")
def checked_paths(model_dir):
    """Each request path run once on the DirectML stand-in under the checker, on first use."""
    engines: dict[tuple, Engine] = {}
    results: dict[str, Checked] = {}
    long_audio, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[:10]], gap_seconds=1.0)
    short_audio = japanese_speech(JAPANESE_SENTENCES[3])

    def run(path_name: str) -> Checked:
        if path_name in results:
            return results[path_name]
        path = REQUEST_PATHS[path_name]
        key = tuple(sorted(path.settings.items())) + tuple(sorted(path.quality.items()))
        with pytest.MonkeyPatch.context() as monkeypatch:
            use_directml_double(monkeypatch, "working")
            if key not in engines:
                engines[key] = Engine.load(
                    ModelSettings(name=str(model_dir), device="directml", dtype="float32", warmup=False, **path.settings)
                )
                if path.quality:
                    fallback = engines[key].long_form.clip.fallback
                    fallback.options = replace(fallback.options, **path.quality)
            engine = engines[key]
            assert engine.info.device == "directml"
            samples = long_audio if path.long_audio else short_audio
            job = TranscriptionJob(samples=np.asarray(samples, dtype=np.float32), language="ja", **path.job)
            with DirectMLRules() as rules:
                transcript = engine.transcribe(job)
        results[path_name] = Checked(transcript, rules)
        return results[path_name]

    return run


@pytest.mark.parametrize(("path", "rule"), list(path_rule_cases()))
def test_request_path_keeps_the_directml_rule(checked_paths, path, rule):
    checked = checked_paths(path)
    assert checked.rules.operators, "the checker saw no operator: the model did not run under it"
    assert not checked.rules.violations(rule), checked.rules.report(rule)


@pytest.mark.parametrize("path", list(REQUEST_PATHS))
def test_request_path_transcribes_under_the_checker(checked_paths, path):
    """The checker must not change what the model hears (and the path must really transcribe)."""
    checked = checked_paths(path)
    reference = "".join(MEETING_SENTENCES[:10]) if REQUEST_PATHS[path].long_audio else JAPANESE_SENTENCES[3]
    assert checked.transcript.text
    if REQUEST_PATHS[path].readable:
        assert character_error_rate(reference, checked.transcript.text) <= 0.35, checked.transcript.text
    if REQUEST_PATHS[path].job.get("word_timestamps"):
        assert checked.transcript.words
