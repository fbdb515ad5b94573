"""Speculative decoding inside the engine process: what the pipeline and every request need,
and counting draft tokens, which GenAI does not tell a step-driven caller.

What GenAI 2026.4 allows, found by ``bench/probes`` (see its README):

* A prompt-lookup pipeline refuses, at ``add_request``, a request without both
  ``num_assistant_tokens`` and ``max_ngram_size``; a draft pipeline accepts a request without
  ``num_assistant_tokens`` and then fails every later ``step()``, which would wedge the engine.
  So every request of a speculative engine gets the model's fields (:func:`request_fields`).
* Grammars, stop strings, ``ignore_eos``, cancel and stop combine with both methods; sampling
  with a draft needs prefix caching off (:func:`prefix_caching`).
* Counting: every step gives a request the main model's own token plus the draft tokens it
  accepted. A draft proposes ``num_assistant_tokens`` a step (fewer near the token budget);
  prompt lookup pads a miss to as many positions, all validated. :class:`DraftCounter` thus
  matches GenAI's own counters (which it only prints, at a high log level), but for a draft that
  stops proposing at its end-of-sequence token: counted as proposing them all.
"""

from __future__ import annotations

from typing import Any

import openvino_genai as og

from ..messages import EngineConfig, Speculation


def kv_cache_precision(config: EngineConfig) -> str | None:
    """The KV cache precision to ask the plugin for, or None for its default."""
    if config.kv_cache_precision:
        return config.kv_cache_precision
    if config.speculative is not None and _on_cpu(config.device):
        # With the CPU plugin's default 8-bit KV cache, speculative greedy output differed
        # from plain greedy output (SmolLM2: 2 prompts of 6; bench/probes/README.md), likely
        # because a validation step attends to its own candidates' keys and values before
        # they are quantised, where one-token steps read them back quantised. With a 16-bit
        # cache it was identical on every prompt tried, and faster on this AVX2 CPU.
        return "f16"
    return None


def prefix_caching(config: EngineConfig) -> bool:
    """Whether the scheduler may reuse the KV blocks of earlier prompts."""
    # With a draft model, GenAI 2026.4 fails a step ("content_length <= prompt_ids.size() +
    # m_generated_ids.size()", sequence_group.cpp) once a sampled request's draft tokens are
    # rejected while prefix caching is on; a failed step breaks the pipeline, and with it every
    # request of the engine. Seen on 7 of 8 seeds at temperature 2, none without prefix caching.
    # Prompt lookup showed no such failure (20 sampled batches, temperatures 0.3 to 2).
    return config.speculative is None or config.speculative.method != "draft"


def pipeline_properties(config: EngineConfig) -> dict[str, Any]:
    """The ContinuousBatchingPipeline properties that switch speculation on."""
    spec = config.speculative
    if spec is None:
        return {}
    if spec.method == "prompt_lookup":
        return {"prompt_lookup": True}
    if not spec.draft_path:
        raise ValueError("a draft model needs a path")
    # No properties of its own: the draft inherits the main model's (KV cache precision, cache
    # folder) and shares its scheduler, which splits the KV cache between the two.
    draft = og.draft_model(spec.draft_path, spec.draft_device or config.device)
    return {"draft_model": draft}


def request_fields(spec: Speculation | None) -> dict[str, int]:
    """GenerationConfig fields every request of a speculative engine must carry."""
    if spec is None:
        return {}
    fields = {"num_assistant_tokens": spec.num_assistant_tokens}
    if spec.method == "prompt_lookup":
        fields["max_ngram_size"] = spec.max_ngram_size
    return fields


class DraftCounter:
    """Draft tokens proposed and accepted, counted from the tokens each step gives a request.

    A request's first tokens come from its prefill, with nothing proposed. After that, each
    step that gives it ``n`` tokens validated ``min(k, room - 1)`` draft tokens (``room``: the
    tokens its budget had left; the main model's own token takes one) and accepted ``n - 1``.
    """

    def __init__(self, spec: Speculation | None) -> None:
        self.assistant_tokens = spec.num_assistant_tokens if spec is not None else 0
        self.proposed = 0
        self.accepted = 0

    def count(self, before: int, got: int, budget: int) -> None:
        """A request that had ``before`` tokens got ``got`` more in a step."""
        if not self.assistant_tokens or before == 0 or got == 0:
            return
        self.proposed += max(0, min(self.assistant_tokens, budget - before - 1))
        self.accepted += got - 1

    def take(self) -> tuple[int, int]:
        """(proposed, accepted) since the last call."""
        counts = (self.proposed, self.accepted)
        self.proposed = self.accepted = 0
        return counts


def _on_cpu(device: str) -> bool:
    return device.upper().split(".", 1)[0] == "CPU"
