"""Where proposed and accepted draft tokens can be read, for ``ov_spec_*_tokens_total``.

    PYTHONPATH=app:tests:bench python -m probes.metrics

1. What the Python API offers a server that drives ``add_request`` / ``step()``:
   ``ContinuousBatchingPipeline.get_metrics()`` (``PipelineMetrics``),
   ``GenerationHandle.get_perf_metrics()``, and whether ``SpeculativeDecodingMetrics`` is bound.
2. Counting from outside: each step gives a request the main model's own token plus the draft
   tokens it accepted, so accepted = tokens read - 1 per step that produced tokens, and
   proposed = ``num_assistant_tokens`` per decode step (fewer near ``max_new_tokens``).
3. The same counts from GenAI's own ``SpeculativeDecodingMetrics``, which it prints to stdout
   (C++ ``std::cout``) when ``OPENVINO_LOG_LEVEL`` > 2 and the pipeline runs empty: captured
   here from file descriptor 1 and compared.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import openvino_genai as og

from probes import common
from probes.common import greedy, log

K = 5


def api_surface(pipe: Any, prompt: Any) -> None:
    log.info(
        "openvino_genai.SpeculativeDecodingMetrics bound: %s",
        hasattr(og, "SpeculativeDecodingMetrics"),
    )
    metrics = pipe.get_metrics()
    fields = [n for n in dir(metrics) if not n.startswith("_")]
    log.info(
        "ContinuousBatchingPipeline.get_metrics() -> %s: %s",
        type(metrics).__name__,
        ", ".join(fields),
    )
    handle = pipe.add_request(999, prompt, greedy(8, num_assistant_tokens=K))
    while handle.get_status() == og.GenerationStatus.RUNNING:
        pipe.step()
    perf = handle.get_perf_metrics()
    log.info(
        "GenerationHandle.get_perf_metrics() -> %s: %s",
        type(perf).__name__,
        ", ".join(n for n in dir(perf) if not n.startswith("_")),
    )


def captured_stdout(action: Callable[[], Any]) -> tuple[Any, str]:
    """Runs ``action`` with file descriptor 1 redirected to a file; returns what C++ wrote."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            result = action()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        return result, sink.read().decode(errors="replace")


def genai_counts(text: str) -> list[dict[str, float]]:
    """Per request, in the order GenAI prints them: iterations, draft tokens, accepted %."""
    out = []
    pattern = re.compile(
        r"REQUEST_ID: (\d+)\s+Main model iterations: (\d+)\s+AVG acceptance rate, %: ([\d.na-]+)"
        r"\s+Generated tokens by draft model: (\d+)\s+Accepted token rate, %: ([\d.na-]+)"
    )
    for match in pattern.finditer(text):
        draft, rate = int(match.group(4)), float(match.group(5))
        out.append(
            {
                "iterations": int(match.group(2)),
                "draft_tokens": draft,
                "accepted": round(draft * rate / 100) if rate == rate else float("nan"),
            }
        )
    return out


def compare(label: str, pipe: Any, prompts: list[Any], extra: dict[str, int]) -> None:
    configs = [greedy(48, ignore_eos=True, **extra) for _ in prompts]
    os.environ["OPENVINO_LOG_LEVEL"] = "4"
    try:
        (outcomes, _), text = captured_stdout(
            lambda: common.run(pipe, list(zip(prompts, configs, strict=True)), len(prompts))
        )
    except Exception as exc:  # noqa: BLE001 - a probe reports what GenAI raises
        log.info("%s with OPENVINO_LOG_LEVEL=4: step() raised: %s", label, common._one_line(exc))
        return
    finally:
        del os.environ["OPENVINO_LOG_LEVEL"]
    ours = [
        {
            "decode_steps": o.decode_steps,
            "proposed_upper": o.decode_steps * K,
            "accepted": o.accepted,
            "tokens": o.tokens,
        }
        for o in outcomes
    ]
    log.info("%s, counted from outside: %s", label, ours)
    log.info("%s, GenAI's SpeculativeDecodingMetrics (stdout): %s", label, genai_counts(text))
    summary = [line for line in text.splitlines() if "AVG acceptance rate" in line][:1]
    log.info("%s, GenAI's summary line: %s", label, summary)


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    tiny = common.tiny_model()
    plain = common.pipeline(tiny)
    tokenizer = plain.get_tokenizer()
    prompts = [
        common.encode(tokenizer, [{"role": "user", "content": text}])
        for text in ("Tell me a story", "Count to five", "What is the capital of France?")
    ]
    drafted = common.pipeline(tiny, draft_model=og.draft_model(str(tiny), "CPU"))
    api_surface(drafted, prompts[0])
    compare("tiny model drafting for itself", drafted, prompts, {"num_assistant_tokens": K})
    lookup = common.pipeline(tiny, prompt_lookup=True)
    compare(
        "tiny model, prompt lookup",
        lookup,
        prompts,
        {"num_assistant_tokens": K, "max_ngram_size": 3},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
