"""Which levers close the single-stream gap to llama.cpp's llama-server, on which workload.

    PYTHONPATH=app:tests:bench python -m probes.levers [--rounds 2] [--requests 4]
                                                       [--max-tokens 64] [--no-llama-server]

One run, every configuration on the same prompts, in rounds whose order alternates, so that
a busy neighbour weighs on all alike; compare the ratios to the baseline, not the absolute
figures. Configurations (all greedy, ``ignore_eos``, one stream unless said):

- ``baseline``: the server's ContinuousBatchingPipeline on the int8 IR (KV cache u8 on CPU);
- ``kv f16`` / ``kv f32``: the same with ``KV_CACHE_PRECISION`` (f32 with f32 inference);
- ``threads 1``: ``INFERENCE_NUM_THREADS`` 1 (the other core left to the server's loop);
- ``latency hint``: ``PERFORMANCE_HINT`` LATENCY;
- ``gguf u4``: the pipeline on the Q4_1 GGUF itself (4-bit weights in groups of 32, as
  llama.cpp reads them) instead of the int8 IR;
- ``LLMPipeline sdpa``: the stateful SDPA path (``ATTENTION_BACKEND`` SDPA);
- ``prompt lookup``: on the chat and on the copy/edit prompts;
- ``llama-server``: the cached binary of bench/llama_server.py on the GGUF, streamed over HTTP
  (includes HTTP and detokenization, which the direct configurations do not pay).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import int8_ir
import openvino_genai as og
import workloads

from probes import common
from probes.common import greedy, log

PL = {"num_assistant_tokens": 5, "max_ngram_size": 3}


def direct(pipe: Any, extra: dict[str, int] | None = None) -> Callable[[list[Any], int], int]:
    def run(prompts: list[Any], max_tokens: int) -> int:
        cfg = greedy(max_tokens, ignore_eos=True, **(extra or {}))
        outcomes, _ = common.run(pipe, [(p, cfg) for p in prompts])
        return sum(o.tokens for o in outcomes)

    return run


def llm_pipeline(pipe: Any) -> Callable[[list[Any], int], int]:
    def run(prompts: list[Any], max_tokens: int) -> int:
        cfg = pipe.get_generation_config()
        cfg.max_new_tokens = max_tokens
        cfg.ignore_eos = True
        cfg.do_sample = False
        cfg.apply_chat_template = False
        total = 0
        for prompt in prompts:
            result = pipe.generate(og.TokenizedInputs(prompt, _ones(prompt)), cfg)
            total += len(result.tokens[0])
        return total

    return run


def _ones(ids: Any) -> Any:
    import numpy as np
    import openvino as ov

    return ov.Tensor(np.ones(ids.get_shape(), dtype=np.int64))


def llama(base_url: str, messages: list[list[dict[str, Any]]]) -> Callable[[list[Any], int], int]:
    from openai_stream import chat_body, stream_chat

    def run(prompts: list[Any], max_tokens: int) -> int:
        async def go() -> int:
            async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
                total = 0
                for chat in messages[: len(prompts)]:
                    result = await stream_chat(client, chat_body("m", chat, max_tokens))
                    total += result.completion_tokens or 0
                return total

        return asyncio.run(go())

    return run


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--no-llama-server", action="store_true")
    args = parser.parse_args(argv)
    log.info("machine: %s", common.load_note())
    smol = common.smollm2()
    gguf = int8_ir.smollm2_gguf()
    assert gguf is not None
    sched = common.scheduler()

    def cb(model: Any, **props: Any) -> Any:
        return og.ContinuousBatchingPipeline(str(model), sched, "CPU", props)

    base = common.pipeline(smol)
    tokenizer = base.get_tokenizer()
    chats = [list(r.messages) for r in workloads.load("chat").requests]
    copies = [list(r.messages) for r in workloads.load("copy_edit").requests]
    chat_prompts = [common.encode(tokenizer, m) for m in chats]
    copy_prompts = [common.encode(tokenizer, m) for m in copies]
    lookup = cb(smol, prompt_lookup=True)
    configs: dict[str, tuple[Callable[[list[Any], int], int], list[Any]]] = {
        "baseline (chat)": (direct(base), chat_prompts),
        "kv f16": (direct(cb(smol, KV_CACHE_PRECISION="f16")), chat_prompts),
        "kv f32": (
            direct(cb(smol, KV_CACHE_PRECISION="f32", INFERENCE_PRECISION_HINT="f32")),
            chat_prompts,
        ),
        "threads 1": (direct(cb(smol, INFERENCE_NUM_THREADS=1)), chat_prompts),
        "latency hint": (direct(cb(smol, PERFORMANCE_HINT="LATENCY")), chat_prompts),
        "gguf u4": (direct(cb(gguf)), chat_prompts),
        "LLMPipeline sdpa": (
            llm_pipeline(og.LLMPipeline(str(smol), "CPU", ATTENTION_BACKEND="SDPA")),
            chat_prompts,
        ),
        "prompt lookup (chat)": (direct(lookup, PL), chat_prompts),
        "baseline (copy_edit)": (direct(base), copy_prompts),
        "prompt lookup (copy_edit)": (direct(lookup, PL), copy_prompts),
    }
    server = None
    if not args.no_llama_server:
        import llama_server

        binary = llama_server.find_binary()
        if binary is None:
            log.info("no llama-server binary: build it with `python bench/llama_server.py build`")
        else:
            server = llama_server.LlamaServer(binary, gguf).start()
            log.info("llama-server %s", llama_server.binary_version(binary))
            configs["llama-server (chat)"] = (llama(server.base_url, chats), chat_prompts)
            configs["llama-server (copy_edit)"] = (llama(server.base_url, copies), copy_prompts)
    try:
        for run, prompts in configs.values():  # warm-up: compile, first-inference costs
            run(prompts[:1], 4)
        tokens = dict.fromkeys(configs, 0)
        walls = dict.fromkeys(configs, 0.0)
        for round_index in range(args.rounds):
            names = list(configs) if round_index % 2 == 0 else list(reversed(configs))
            part = slice(round_index * args.requests, (round_index + 1) * args.requests)
            for name in names:
                run, prompts = configs[name]
                started = time.perf_counter()
                tokens[name] += run(prompts[part], args.max_tokens)
                walls[name] += time.perf_counter() - started
    finally:
        if server is not None:
            server.stop()
    rates = {name: tokens[name] / walls[name] for name in configs}
    for name, rate in rates.items():
        reference = "baseline (copy_edit)" if "copy_edit" in name else "baseline (chat)"
        log.info("%-28s %6.1f tok/s  x%.2f of %s", name, rate, rate / rates[reference], reference)
    log.info("machine: %s", common.load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
