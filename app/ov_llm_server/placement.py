"""Where a model runs and in which precision: its registry entry, the int4 rule, OV_DEVICE,
and OV_INFERENCE_PRECISION.

int4 is unstable on the UHD 630's GPU stack (wrong output, crashes), while int8 is the
production format there. So a 4-bit model whose entry names no device runs on
``OV_INT4_DEVICE`` (CPU by default) whenever ``OV_DEVICE`` may put it on a GPU. Pure functions:
the server, ``ov-convert-model`` and the doctor share them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .engine.messages import EngineConfig, EngineKind, Speculation
from .registry import AUDIO_TASKS, ModelEntry
from .settings import Settings

# Devices that dispatch to others: "AUTO:GPU,CPU", "HETERO:GPU,CPU", "BATCH:GPU(4)", "AUTO:-CPU".
VIRTUAL_DEVICES = frozenset({"AUTO", "MULTI", "HETERO", "BATCH"})

# int4 and the GGUF quantisations OpenVINO reads as 4-bit or narrower weights.
_LOW_BIT = re.compile(r"^(int4|u4|i4|nf4|mxfp4|fp4)([_-].*)?$|^i?q[234](_.*)?$")
# The quantisation tag GGUF files carry by convention: "SmolLM2-135M-Instruct.Q4_1.gguf".
_GGUF_TAG = re.compile(r"[.\-_]((?:I?Q[2-8](?:_[0-9A-Z]+)*)|BF16|F16|F32)\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class Placement:
    device: str
    reason: str


def device_choices(device: str) -> tuple[list[str], list[str]]:
    """(devices a device string may run on, devices it excludes), both as written.

    ``GPU.0`` -> (["GPU.0"], []); ``AUTO:GPU,CPU`` -> (["GPU", "CPU"], []);
    ``AUTO:-CPU`` -> ([], ["CPU"]); a bare ``AUTO`` -> ([], []): any device.
    """
    text = device.strip()
    head, _, rest = text.partition(":")
    if head.upper() not in VIRTUAL_DEVICES:
        return [text], []
    included: list[str] = []
    excluded: list[str] = []
    for item in rest.split(","):
        name = item.strip().split("(", 1)[0].strip()
        if not name:
            continue
        if name.startswith("-"):
            excluded.append(name[1:])
        else:
            included.append(name)
    return included, excluded


def _is_gpu(name: str) -> bool:
    return name.upper().split(".", 1)[0] == "GPU"


def targets_gpu(device: str) -> bool:
    """Whether a device string may run a model on a GPU (a bare AUTO prefers one)."""
    included, excluded = device_choices(device)
    if included:
        return any(_is_gpu(name) for name in included)
    head = device.strip().partition(":")[0].upper()
    return head == "AUTO" and not any(_is_gpu(name) for name in excluded)


def is_low_bit(weight_format: str) -> bool:
    """int4, or a GGUF quantisation of 4 bits or fewer (q4_1, q4_k_m, iq4_xs, q3_k, ...)."""
    return bool(_LOW_BIT.match(weight_format.strip().lower()))


def gguf_weight_format(path: Path | None) -> str | None:
    """The quantisation in a GGUF file's name (``q4_1``), or None when it names none."""
    if path is None:
        return None
    match = _GGUF_TAG.search(path.name)
    return match.group(1).lower() if match else None


def choose_device(entry: ModelEntry | None, settings: Settings) -> Placement:
    """Where a model runs; ``entry`` is None for the fallback model (OV_MODEL_PATH).

    An entry's own ``device`` wins; a speech model runs on OV_AUDIO_DEVICE (the iGPU is kept
    for the language models); a 4-bit model runs on OV_INT4_DEVICE when OV_DEVICE may be a
    GPU; everything else runs on OV_DEVICE.
    """
    if entry is not None and entry.device:
        return Placement(entry.device, "set by its registry entry")
    if entry is not None and entry.task in AUDIO_TASKS and settings.audio_device:
        device = settings.audio_device
        return Placement(device, f"a speech model: OV_AUDIO_DEVICE={device}")
    weight_format = (
        entry.weight_format if entry is not None else gguf_weight_format(settings.model_path)
    )
    int4_device = settings.int4_device
    if (
        weight_format is not None
        and is_low_bit(weight_format)
        and int4_device
        and targets_gpu(settings.device)
    ):
        return Placement(
            int4_device,
            f"{weight_format} weights with OV_DEVICE={settings.device}: "
            f"int4 runs on OV_INT4_DEVICE={int4_device}",
        )
    return Placement(settings.device, "OV_DEVICE")


def choose_precision(
    kind: EngineKind, device: str, entry: ModelEntry | None, settings: Settings
) -> str | None:
    """The inference precision hint for a model on ``device``; None: the device's default.

    The entry's ``inference_precision`` wins over OV_INFERENCE_PRECISION. ``auto`` keeps every
    kind but the text LLM on a CPU in f32: embedders and rerankers (a bf16 CPU would score in
    steps of 1/256, which turns close scores into ties and reorders rankings), and the vision,
    Whisper and speech models, small ones whose outputs are compared with transformers'. A
    text LLM keeps the device's default (bf16 where the CPU has it, which decodes
    faster; f32 on the target's i7-8700B; f16 on a GPU).
    """
    wanted = (entry.inference_precision if entry is not None else None) or "auto"
    if wanted == "auto":
        wanted = settings.inference_precision
    if wanted != "auto":
        return wanted
    included, _ = device_choices(device)
    on_cpu_only = bool(included) and all(_is_cpu(name) for name in included)
    return "f32" if kind != "llm" and on_cpu_only else None


def engine_config(
    settings: Settings,
    device: str,
    kind: EngineKind,
    entry: ModelEntry | None,
    speculative: Speculation | None = None,
) -> EngineConfig:
    """How a model's engine is built on ``device``: for the server and ``ov-llm-server bench``."""
    return EngineConfig(
        device=device,
        max_batch=settings.max_batch,
        kv_cache_gb=settings.kv_cache_gb,
        kv_cache_precision=settings.kv_cache_precision,
        inference_precision=choose_precision(kind, device, entry, settings),
        cache_dir=str(settings.cache_dir) if settings.cache_dir else None,
        encoder_batch=settings.encoder_max_batch,
        speculative=speculative,
        voices=tuple(sorted((entry.voices or {}).items())) if entry is not None else (),
    )


def _is_cpu(name: str) -> bool:
    return name.upper().split(".", 1)[0] == "CPU"


def int4_warning(settings: Settings) -> str | None:
    """What ``ov-convert-model`` says before writing int4 for a host whose device is a GPU."""
    if not targets_gpu(settings.device):
        return None
    int4_device = settings.int4_device
    if int4_device and not targets_gpu(int4_device):
        return (
            f"int4 is unstable on this iGPU stack: with OV_DEVICE={settings.device} the server "
            f"runs int4 models on OV_INT4_DEVICE={int4_device} unless their registry entry sets "
            '"device"; int8 is the format for the GPU'
        )
    return (
        f"int4 is unstable on this iGPU stack and OV_INT4_DEVICE={int4_device or '(empty)'} "
        "runs it on the GPU: expect wrong output or crashes; int8 is the format for the GPU. "
        "Check the model with: ov-llm-server doctor --probe-model NAME"
    )
