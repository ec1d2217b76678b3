"""Tensor checks: each operation Whisper's decoding uses, on the device in the configured dtype,
compared with float32 on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import devices
from ..config import Settings
from .report import Report

Inputs = dict[str, torch.Tensor]


@dataclass(frozen=True)
class OperationCheck:
    name: str
    largest_difference: float | None  # None when the device raised
    tolerance: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.largest_difference is not None and self.largest_difference <= self.tolerance


def make_inputs() -> Inputs:
    """Inputs shaped like a small Whisper layer and a decoding step; integer ones stay integers."""
    generator = torch.Generator().manual_seed(0)
    return {
        "queries": torch.randn(1, 4, 32, 64, generator=generator),
        "keys": torch.randn(1, 4, 32, 64, generator=generator),
        "values": torch.randn(1, 4, 32, 64, generator=generator),
        "features": torch.randn(1, 80, 100, generator=generator),
        "filters": torch.randn(64, 80, 3, generator=generator) * 0.1,
        "scores": torch.randn(4, 200, generator=generator) * 3,  # logits of 4 beams
        "uniform": torch.rand(4, 200, generator=generator).clamp(0.01, 0.99),  # sampling noise, log-safe in 16 bits
        "table": torch.randn(200, 64, generator=generator),  # token embeddings
        "tokens": torch.randint(0, 200, (4, 8), generator=generator),
        "positions": torch.randint(0, 200, (4, 5), generator=generator),
        "beam_order": torch.tensor([1, 0, 3, 2]),
        "suppressed": torch.rand(4, 200, generator=generator) < 0.3,
    }


def _chosen(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The scores at the chosen indices: a wrong index shows as a smaller score, a tie as none."""
    return scores.gather(-1, index.unsqueeze(-1))


def _projection_into_buffer(t: Inputs) -> torch.Tensor:
    """The decoding step's projections: `addmm` written into a buffer made once (`out=`)."""
    rows, weight, bias = t["queries"][0, 0], t["keys"][0, 0].t(), t["values"][0, 0, 0, :32]
    buffer = rows.new_empty((rows.shape[0], 32))
    torch.addmm(bias, rows, weight, out=buffer)
    return buffer


def _cache_write_and_attention(t: Inputs) -> torch.Tensor:
    """The step's self-attention: keys and values written side by side into a cache with
    `index_copy_`, attended through views of it with an additive mask."""
    both = torch.cat([t["keys"], t["values"]], dim=1)  # (1, 2 * heads, positions, width)
    position = torch.tensor([5], device=both.device)
    both.index_copy_(2, position, torch.cat([t["queries"], t["queries"]], dim=1)[:, :, :1])
    heads = t["keys"].shape[1]
    mask = torch.zeros((1, 1, 1, both.shape[2]), dtype=both.dtype, device=both.device)
    mask.index_fill_(3, torch.arange(6, both.shape[2], device=both.device), float("-inf"))
    return torch.nn.functional.scaled_dot_product_attention(
        t["queries"][:, :, :1], both[:, :heads], both[:, heads:], attn_mask=mask)


def _rule_lookup(t: Inputs) -> torch.Tensor:
    """The timestamp rules: an int32 table row per state (index_select), compared with a floor."""
    table = (t["positions"] * 7).to(torch.int32)  # (4, 5)
    state = torch.tensor([1, 0, 3], device=table.device)
    floor = torch.tensor([[10], [500], [0]], dtype=torch.int32, device=table.device)
    return (table.index_select(0, state) < floor).to(t["scores"].dtype)


def operations(attention: str) -> dict[str, Callable[[Inputs], torch.Tensor]]:
    """Each kind of operation Whisper's encoder and decoding loop run."""
    functional = torch.nn.functional
    checks: dict[str, Callable[[Inputs], torch.Tensor]] = {
        "matrix multiply": lambda t: t["queries"] @ t["keys"].transpose(-1, -2),
        "softmax": lambda t: torch.softmax(t["queries"] @ t["keys"].transpose(-1, -2) / 8.0, dim=-1),
        "log-softmax": lambda t: torch.log_softmax(t["scores"], dim=-1),
        "convolution": lambda t: functional.conv1d(t["features"], t["filters"], padding=1),
        "layer norm": lambda t: functional.layer_norm(t["queries"], (t["queries"].shape[-1],)),
        "GELU": lambda t: functional.gelu(t["queries"]),
        "embedding": lambda t: functional.embedding(t["tokens"], t["table"]),
        "indexing and gather": lambda t: t["scores"][:, 10:150].gather(-1, t["positions"] % 140),
        "argmax": lambda t: _chosen(t["scores"], t["scores"].argmax(dim=-1)),
        "sort and topk": lambda t: torch.cat(
            [t["scores"].topk(5, dim=-1).values, t["scores"].sort(dim=-1, descending=True).values[:, :5]], dim=-1
        ),
        "cumsum": lambda t: torch.softmax(t["scores"], dim=-1).cumsum(dim=-1),
        "masked_fill": lambda t: t["scores"].masked_fill(t["suppressed"], -1e4),
        "index_select (beam reorder)": lambda t: t["queries"].index_select(1, t["beam_order"]),
        "Gumbel-max sampling": lambda t: _chosen(
            t["scores"] - torch.log(-torch.log(t["uniform"])),
            (t["scores"] - torch.log(-torch.log(t["uniform"]))).argmax(dim=-1),
        ),
        "attention (eager)": lambda t: torch.softmax(
            t["queries"] @ t["keys"].transpose(-1, -2) / 8.0, dim=-1
        ) @ t["values"],
    }
    checks["projection into a buffer (addmm, out=)"] = _projection_into_buffer
    checks["timestamp rule lookup (int32)"] = _rule_lookup
    if attention == "sdpa":
        checks["attention (sdpa)"] = lambda t: functional.scaled_dot_product_attention(t["queries"], t["keys"], t["values"])
        checks["cache write and attention on its views (sdpa)"] = _cache_write_and_attention
    return checks


def check_operations(device: torch.device, dtype: torch.dtype, attention: str) -> list[OperationCheck]:
    """Run each operation on `device` in `dtype` (under no_grad, as decoding does) and compare it
    with float32 on the CPU."""
    inputs = make_inputs()
    # Relative to the result's size: float16 keeps about 3 significant digits, bfloat16 about 2.
    tolerance = {torch.float32: 1e-3, torch.float16: 2e-2}.get(dtype, 4e-2)
    checks = []
    for name, operation in operations(attention).items():
        try:
            with torch.no_grad():
                expected = operation(inputs)
                on_device = {
                    key: value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
                    for key, value in inputs.items()
                }
                actual = operation(on_device).to(device="cpu", dtype=torch.float32)
            if actual.shape != expected.shape:
                raise RuntimeError(f"shape {tuple(actual.shape)} instead of {tuple(expected.shape)}")
            if not torch.isfinite(actual).all():
                difference = float("inf")
            else:
                scale = max(float(expected.abs().max()), 1.0)
                difference = float((actual - expected).abs().max()) / scale
            checks.append(OperationCheck(name, difference, tolerance))
        except Exception as error:
            checks.append(OperationCheck(name, None, tolerance, f"{type(error).__name__}: {error}".strip()))
    return checks


INT8_TOLERANCE = 3e-2  # int8 weights and 7-bit activations: about 2 significant digits


def check_int8_projection(device: torch.device) -> OperationCheck:
    """The int8 weights' product (quantization.Int8Projection) with its input on `device`,
    against the float product on the CPU. Its kernels are the CPU's: on another device it can
    only raise or run through a fallback to the CPU (the CPU fallbacks section names it)."""
    from ..inference.quantization import Int8Projection

    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 64, generator=generator) * 0.1, torch.randn(96, generator=generator) * 0.1
    inputs = torch.randn(5, 64, generator=generator)
    name = "int8 projection (quantized weights, activations quantized per call)"
    try:
        with torch.no_grad():
            expected = torch.nn.functional.linear(inputs, weight, bias)
            actual = Int8Projection(weight, bias)(inputs.to(device)).to(device="cpu", dtype=torch.float32)
        difference = float((actual - expected).abs().max()) / max(float(expected.abs().max()), 1.0)
        return OperationCheck(name, difference, INT8_TOLERANCE)
    except Exception as error:
        return OperationCheck(name, None, INT8_TOLERANCE, f"{type(error).__name__}: {error}".strip())


def report_tensor_check(report: Report, choice: devices.DeviceChoice, settings: Settings) -> bool:
    report.section("Tensor check")
    dtype_name = devices.resolve_dtype(settings.model.dtype, choice.kind)
    report.item("on", f"{choice.kind} in {dtype_name}")
    if choice.kind == "directml":
        float64 = {True: "supported", False: "not supported (whisper-api decodes without it)", None: "unknown"}
        report.item("float64", float64[choice.float64_support])
    # int8: float32 activations around int8 projection weights
    compute_dtype = torch.float32 if dtype_name == "int8" else getattr(torch, dtype_name)
    checks = check_operations(choice.device, compute_dtype, settings.model.attention)
    refused = devices.dtype_problem(choice.kind, dtype_name) if dtype_name == "int8" else None
    if dtype_name == "int8":
        int8 = check_int8_projection(choice.device)
        if refused:  # reported here, once, with what the device did
            happened = int8.error or ("ran, through the CPU" if int8.passed else "gave wrong results")
            report.problem(f"int8 projection on {choice.kind}: {happened}; the server refuses dtype = int8 there", refused)
        else:
            checks.append(int8)
    for check in checks:
        if check.passed:
            report.ok(f"{check.name}: matches the CPU (largest difference {check.largest_difference:.1e})")
        elif check.error is not None:
            first_line = check.error.splitlines()[0][:300]
            report.problem(f"{check.name} on {choice.kind} ({dtype_name}) raised {first_line}", _advice(check, dtype_name))
        else:
            report.problem(
                f"{check.name} on {choice.kind} ({dtype_name}) gives wrong results "
                f"(difference {check.largest_difference:.1e}, allowed {check.tolerance:.0e})",
                _advice(check, dtype_name),
            )
    return refused is None and all(check.passed for check in checks)


def _advice(check: OperationCheck, dtype_name: str) -> str:
    if check.name == "attention (sdpa)":
        return "set [model] attention = eager"
    if dtype_name == "int8":
        return "set [model] dtype = float32 (this CPU's quantized kernels give wrong results)"
    if dtype_name != "float32":
        return f"set [model] dtype = float32 ({dtype_name} is unstable on some devices and drivers)"
    return "update the graphics driver; until then set [model] device = cpu"
