"""The functional probe: one model, greedy, on the device and on the CPU; same answer?

A GPU that loads a model but computes garbage (the int4 failure on this iGPU) passes every
device listing; only running a model shows it. The CPU run is the reference, in f32 so that it
is as exact as the CPU gets; the device runs with the service's own properties. A correct
device may still drift from the reference after some tokens (f16 arithmetic), so agreement on
the first words counts as a pass; a device computing garbage differs from the first word.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..placement import choose_device, gguf_weight_format, targets_gpu
from ..registry import TEXT_GENERATION, ModelEntry, resolve_model_path
from ..settings import Settings
from .isolation import ChildOutcome, run_child

DEFAULT_PROMPT = "What is the capital of France?"
DEFAULT_MAX_NEW_TOKENS = 24
AGREEING_WORDS = 4
# CPUs with AVX512-BF16 infer in bf16 by default; f32 KV cache requires f32 inference there.
REFERENCE_PROPERTIES = {"KV_CACHE_PRECISION": "f32", "INFERENCE_PRECISION_HINT": "f32"}

ProbeStatus = Literal["identical", "agrees", "differs", "failed", "inconclusive"]


@dataclass(frozen=True)
class ProbeTarget:
    model: str  # registry name, or the path given
    path: Path
    weight_format: str | None
    device: str
    reason: str


@dataclass
class ProbeResult:
    model: str
    path: str
    weight_format: str | None
    device: str
    reason: str
    status: ProbeStatus
    prompt: str
    reference_text: str | None = None
    device_text: str | None = None
    agreeing_words: int = 0
    error: str | None = None
    crashed_by: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def choose_target(
    settings: Settings,
    entries: dict[str, ModelEntry],
    model: str | None = None,
    device: str | None = None,
) -> ProbeTarget | str:
    """What to probe, or why nothing is probed.

    ``model`` (a registry name or a path) and ``device`` override the choice; otherwise the
    smallest text-generation model that the service would run on a GPU, on that GPU (an
    embedder, a vision or a speech model is no LLMPipeline's).
    """
    if model is not None:
        entry = entries.get(model)
        if entry is not None:
            path = resolve_model_path(settings.registry_path, entry)
        else:
            path = Path(model).expanduser()
            entry = ModelEntry(path=str(path), weight_format=gguf_weight_format(path) or "unknown")
        placement = choose_device(entry, settings)
        return ProbeTarget(
            model,
            path,
            entry.weight_format,
            device or placement.device,
            "--probe-model" + ("" if device else f"; device: {placement.reason}"),
        )
    candidates: list[tuple[str, Path, str | None, str, str]] = []
    for name, entry in entries.items():
        if not entry.task.startswith(TEXT_GENERATION):  # the probe runs an LLMPipeline
            continue
        placement = choose_device(entry, settings)
        path = resolve_model_path(settings.registry_path, entry)
        candidates.append((name, path, entry.weight_format, placement.device, placement.reason))
    if settings.model_path is not None:
        placement = choose_device(None, settings)
        fallback = settings.fallback_model_name() or str(settings.model_path)
        candidates.append(
            (
                fallback,
                settings.model_path,
                gguf_weight_format(settings.model_path),
                placement.device,
                placement.reason,
            )
        )
    # With a device given, any model will do; otherwise only those the service runs on a GPU.
    wanted = [c for c in candidates if c[1].exists() and (device or targets_gpu(c[3]))]
    if not wanted:
        if device is None and not targets_gpu(settings.device):
            return f"nothing to compare: OV_DEVICE={settings.device} is not a GPU"
        return (
            "no model to probe: the registry lists none"
            + ("" if device else " that the service would run on a GPU")
            + " (convert one with ov-convert-model, or pass --probe-model NAME|PATH)"
        )
    name, path, weight_format, placed, reason = min(wanted, key=lambda c: (_size(c[1]), c[0]))
    return ProbeTarget(
        name,
        path,
        weight_format,
        device or placed,
        "--probe-device, the smallest model"
        if device
        else f"the smallest model the service runs on a GPU ({reason})",
    )


def compare(reference: str, candidate: str) -> tuple[ProbeStatus, int]:
    """(status, words the two greedy answers share from the start)."""
    ref_words, cand_words = reference.split(), candidate.split()
    shared = 0
    for ref_word, cand_word in zip(ref_words, cand_words, strict=False):
        if ref_word != cand_word:
            break
        shared += 1
    if not ref_words:
        return "inconclusive", shared
    if reference == candidate:
        return "identical", shared
    if shared >= min(AGREEING_WORDS, len(ref_words)):
        return "agrees", shared
    return "differs", shared


def device_properties(settings: Settings) -> dict[str, Any]:
    """The OpenVINO properties the service compiles with, as far as they change results."""
    properties: dict[str, Any] = {}
    if settings.cache_dir is not None:
        properties["CACHE_DIR"] = str(settings.cache_dir)
    if settings.kv_cache_precision:
        properties["KV_CACHE_PRECISION"] = settings.kv_cache_precision
    return properties


def _run(
    target: ProbeTarget,
    device: str,
    properties: dict[str, Any],
    prompt: str,
    max_new_tokens: int,
    timeout: float,
) -> ChildOutcome:
    return run_child(
        [
            "probe",
            "--model",
            str(target.path),
            "--device",
            device,
            "--properties",
            json.dumps(properties),
            "--prompt",
            prompt,
            "--max-new-tokens",
            str(max_new_tokens),
        ],
        timeout,
    )


def run_probe(
    target: ProbeTarget,
    settings: Settings,
    *,
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    timeout: float = 600.0,
) -> ProbeResult:
    """Each run in its own child process: one at a time in memory, and a crash on the device
    says which run crashed."""
    result = ProbeResult(
        model=target.model,
        path=str(target.path),
        weight_format=target.weight_format,
        device=target.device,
        reason=target.reason,
        status="failed",
        prompt=prompt,
    )
    reference = _run(target, "CPU", REFERENCE_PROPERTIES, prompt, max_new_tokens, timeout)
    result.seconds["reference"] = round(reference.seconds, 2)
    if reference.data is None or reference.error:
        result.status = "inconclusive"
        result.error = f"the CPU reference run failed: {reference.error}"
        return result
    result.reference_text = str(reference.data["text"])
    candidate = _run(
        target, target.device, device_properties(settings), prompt, max_new_tokens, timeout
    )
    result.seconds["device"] = round(candidate.seconds, 2)
    if candidate.data is None or candidate.error:
        result.error = candidate.error
        result.crashed_by = candidate.crashed_by
        return result
    result.device_text = str(candidate.data["text"])
    result.seconds["device_compile"] = float(candidate.data.get("compile_seconds", 0.0))
    result.status, result.agreeing_words = compare(result.reference_text, result.device_text)
    return result
