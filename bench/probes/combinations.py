"""What combines with speculation in the server's ContinuousBatchingPipeline, and what does not.

    PYTHONPATH=app:tests:bench python -m probes.combinations [--model tiny|smollm2]

For prompt lookup and for a draft model (the model drafting for itself, so that every
difference is the feature's, not the draft's), each feature runs greedy on the speculative
pipeline and on the plain one, and the outcomes are compared token for token:

- a grammar (``structured_output_config``: the server's forced tool call grammar);
- ``logprobs``;
- ``GenerationHandle.cancel()`` and ``stop()`` mid-generation, beside a request that goes on;
- ``ignore_eos``;
- GenAI's own ``stop_strings`` (the server matches stop sequences itself, but they exist).

Each line says: refused at ``add_request``, raised in ``step()``, or ran (identical or not).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import openvino_genai as og

from ov_llm_server.output import plan_output
from ov_llm_server.protocol import ChatCompletionRequest
from probes import common
from probes.common import greedy, log

Spec = tuple[str, Callable[[], Any], dict[str, int]]

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def tool_grammar(chat_template: str) -> str:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
    )
    grammar = plan_output(request, chat_template, None).grammar
    assert grammar is not None
    return grammar


def cases(grammar: str) -> dict[str, Callable[[dict[str, int]], list[Any]]]:
    """name -> (extra fields) -> generation configs of the requests run together."""

    def constrained(extra: dict[str, int]) -> list[Any]:
        cfg = greedy(48, **extra)
        cfg.structured_output_config = og.StructuredOutputConfig(grammar=grammar)
        return [cfg]

    return {
        "grammar (forced tool call)": constrained,
        "logprobs=1": lambda extra: [greedy(48, logprobs=1, **extra)],
        "ignore_eos, 64 tokens": lambda extra: [greedy(64, ignore_eos=True, **extra)],
        "stop_strings": lambda extra: [
            greedy(64, stop_strings={"."}, include_stop_str_in_output=True, **extra)
        ],
        "cancel() after 8 tokens, beside another request": lambda extra: [
            greedy(64, ignore_eos=True, **extra),
            greedy(64, ignore_eos=True, **extra),
        ],
        "stop() after 8 tokens, beside another request": lambda extra: [
            greedy(64, ignore_eos=True, **extra),
            greedy(64, ignore_eos=True, **extra),
        ],
    }


def attempt(pipe: Any, prompts: list[Any], configs: list[Any], name: str) -> Any:
    handles = {}
    if name.startswith("cancel"):
        handles["cancel_after"] = {0: 8}
    if name.startswith("stop()"):
        handles["stop_after"] = {0: 8}
    try:
        outcomes, _ = common.run(pipe, list(zip(prompts, configs, strict=False)), 2, **handles)
    except Exception as exc:  # noqa: BLE001 - the probe reports what GenAI raises
        return f"step() raised: {common._one_line(exc)}"
    return outcomes


def describe(plain: Any, spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    refused = [o.error for o in spec if o.error]
    if refused:
        return f"refused at add_request: {refused[0]}"
    if isinstance(plain, str):
        return f"ran ({[o.tokens for o in spec]} tokens) where plain failed: {plain}"
    same = all(a.ids == b.ids for a, b in zip(plain, spec, strict=True))
    parts = [
        "identical tokens" if same else "DIFFERENT tokens",
        f"tokens {[o.tokens for o in spec]} (plain {[o.tokens for o in plain]})",
        f"status {[o.status for o in spec]}",
        f"accepted {[o.accepted for o in spec]}",
    ]
    if any(o.log_probs for o in spec) or any(o.log_probs for o in plain):
        close = all(
            len(a.log_probs) == len(b.log_probs)
            and all(abs(x - y) < 1e-3 for x, y in zip(a.log_probs, b.log_probs, strict=True))
            for a, b in zip(plain, spec, strict=True)
        )
        parts.append(
            f"log_probs {[len(o.log_probs) for o in spec]} per request, "
            f"{'equal' if close else 'NOT equal'} to plain's"
        )
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    args = parser.parse_args(argv)
    log.info("machine: %s", common.load_note())
    model = common.tiny_model() if args.model == "tiny" else common.smollm2()
    plain = common.pipeline(model)
    tokenizer = plain.get_tokenizer()
    prompts = [
        common.encode(tokenizer, [{"role": "user", "content": "What is the weather in Paris?"}]),
        common.encode(tokenizer, [{"role": "user", "content": "Tell me a story"}]),
    ]
    grammar = tool_grammar(tokenizer.chat_template or "")
    variants: dict[str, tuple[Callable[[], Any], dict[str, int]]] = {
        "prompt lookup": (
            lambda: common.pipeline(model, prompt_lookup=True),
            {"num_assistant_tokens": 5, "max_ngram_size": 3},
        ),
        "draft (itself)": (
            lambda: common.pipeline(model, draft_model=og.draft_model(str(model), "CPU")),
            {"num_assistant_tokens": 5},
        ),
    }
    for name, make in cases(grammar).items():
        reference = attempt(plain, prompts, make({}), name)
        for label, (build, extra) in variants.items():
            # A fresh pipeline per case: a failure must not leak into the next case.
            outcome = attempt(build(), prompts, make(extra), name)
            log.info("%s, %s: %s", label, name, describe(reference, outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
