"""A request's :class:`SamplingParams` as an ``openvino_genai.GenerationConfig``.

The one place that maps API sampling fields onto GenAI's; requests without a field
inherit the model's own ``generation_config.json`` defaults.
"""

from __future__ import annotations

from typing import Any

import openvino_genai as og

from ..messages import SamplingParams


def model_defaults(config: Any) -> dict[str, Any]:
    """The model's own generation defaults (generation_config.json) that requests inherit."""
    defaults: dict[str, Any] = {
        "do_sample": bool(config.do_sample),
        "temperature": float(config.temperature),
        "top_p": float(config.top_p),
        "repetition_penalty": float(config.repetition_penalty),
        "stop_token_ids": set(config.stop_token_ids),
    }
    if 0 < config.top_k < 2**31:  # "no limit" is SIZE_MAX, which the bindings cannot take back
        defaults["top_k"] = int(config.top_k)
    if config.eos_token_id >= 0:
        defaults["eos_token_id"] = int(config.eos_token_id)
    return defaults


def generation_config(
    params: SamplingParams, defaults: dict[str, Any], max_new_tokens: int, *, echo: bool = False
) -> Any:
    cfg = og.GenerationConfig(**defaults)
    cfg.max_new_tokens = max_new_tokens
    cfg.num_return_sequences = 1
    cfg.apply_chat_template = False
    if params.logprobs:
        cfg.logprobs = 1  # the chosen token's: GenAI computes no alternatives
    cfg.echo = echo
    if params.temperature is not None:
        if params.temperature == 0:
            cfg.do_sample = False
        else:
            cfg.do_sample = True
            cfg.temperature = params.temperature
    if cfg.do_sample:
        if params.top_p is not None:
            cfg.top_p = params.top_p
        if params.top_k is not None and params.top_k > 0:
            cfg.top_k = params.top_k
    if params.seed is not None:
        cfg.rng_seed = params.seed
    if params.presence_penalty is not None:
        cfg.presence_penalty = params.presence_penalty
    if params.frequency_penalty is not None:
        cfg.frequency_penalty = params.frequency_penalty
    if params.repetition_penalty is not None:
        cfg.repetition_penalty = params.repetition_penalty
    if params.min_new_tokens:
        # The HTTP side refuses min_tokens above max_tokens; the context may leave less room.
        cfg.min_new_tokens = min(params.min_new_tokens, max_new_tokens)
    if params.ignore_eos:
        cfg.ignore_eos = True
    if params.grammar is not None:
        cfg.structured_output_config = og.StructuredOutputConfig(grammar=params.grammar)
    return cfg
