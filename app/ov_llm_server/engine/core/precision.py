"""The precision an engine computes in, as the device resolves OpenVINO's hint.

A device adjusts ``INFERENCE_PRECISION_HINT`` to its hardware without a word: the CPU plugin
computes in bf16 by default where the CPU has bf16 instructions and in f32 where it has none,
and runs a bf16 hint in f32 there; a GPU computes in f16. Only a compiled model says what was
chosen, and a GenAI pipeline does not expose its compiled models, so a one-node model is
compiled with the same device and hint and asked (milliseconds on a CPU).
"""

from __future__ import annotations

import logging

import openvino as ov
from openvino import opset13 as ops

log = logging.getLogger(__name__)

HINT = "INFERENCE_PRECISION_HINT"


def hint_properties(hint: str | None) -> dict[str, str]:
    """The compile properties that ask for ``hint`` (none: the device's default)."""
    return {HINT: hint} if hint else {}


def effective_precision(device: str, hint: str | None) -> str | None:
    """``f32``, ``bf16`` or ``f16``; None where the device does not report it (AUTO, ...)."""
    parameter = ops.parameter([1, 8], ov.Type.f32)
    model = ov.Model([ops.relu(parameter)], [parameter], "precision-probe")
    try:
        compiled = ov.Core().compile_model(model, device, hint_properties(hint))
        return str(compiled.get_property(HINT).get_type_name())
    except Exception as exc:  # a virtual device may not know the property
        log.debug("the precision on %s is not reported: %s", device, exc)
        return None
