"""Tolerances derived from the precision a model actually computes in.

OpenVINO's CPU plugin computes in bf16 where the CPU has bf16 instructions and in f32 where it
has none, whatever a test assumes; a GPU computes in f16. A test that compares a model's numbers
with a reference reads the precision in use (from OpenVINO, or from the server's model card,
which reports what OpenVINO resolved) and allows the rounding that precision makes, so that the
same assertion holds on every CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

# Unit roundoff of each precision: half the gap between 1 and the next number.
UNIT_ROUNDOFF = {"f32": 2.0**-24, "f16": 2.0**-11, "bf16": 2.0**-8}
# How many roundings of a score's size a small network's output accumulates: a 2-layer
# encoder's score in bf16 was seen 1.4 units off (0.0056 against transformers' f32).
ROUNDINGS = 8


def score_tolerance(precision: str | None, base: float) -> float:
    """``base`` (what the weights' own format costs) plus the rounding of ``precision``."""
    assert precision in UNIT_ROUNDOFF, f"unknown precision {precision!r}"
    return base + ROUNDINGS * UNIT_ROUNDOFF[precision]


def order_agrees(scores: Sequence[float], expected: Sequence[float], tolerance: float) -> bool:
    """Whether every pair the reference tells apart by more than twice the tolerance is in
    the same order: nearer pairs may tie or swap within the precision's rounding."""
    for i in range(len(expected)):
        for j in range(len(expected)):
            if expected[i] - expected[j] > 2 * tolerance and not scores[i] > scores[j]:
                return False
    return True
