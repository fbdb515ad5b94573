"""Prefix caching on the shared-prefix workload: TTFT with the cache cold and warm.

    PYTHONPATH=app:tests:bench python -m probes.prefix_cache [--salts 3] [--warm 3]

The server's pipeline (prefix caching on) runs the shared-prefix workload one request at a
time. Each salt makes the ~2,000-token system prompt new to the cache (see
``workloads.Workload.salted``): its first request finds the cache cold, the next ``--warm``
requests (other questions, same system prompt) find it warm. The same requests then run on a
pipeline with ``enable_prefix_caching`` off, where every request is cold.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import openvino_genai as og
import workloads

from probes import common
from probes.common import greedy, log


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--salts", type=int, default=3)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    log.info("machine: %s", common.load_note())
    smol = common.smollm2()
    cached = common.pipeline(smol)
    tokenizer = cached.get_tokenizer()
    sched = common.scheduler()
    sched.enable_prefix_caching = False
    uncached = og.ContinuousBatchingPipeline(str(smol), sched, "CPU", {})
    base = workloads.load("shared_prefix")
    cold, warm, off = [], [], []
    for salt in range(args.salts):
        requests = base.salted(f"prefix-probe-{salt}").requests[: 1 + args.warm]
        prompts = [common.encode(tokenizer, r.messages) for r in requests]
        cfg = greedy(args.max_tokens, ignore_eos=True)
        for index, prompt in enumerate(prompts):
            (outcome,), _ = common.run(cached, [(prompt, cfg)])
            (cold if index == 0 else warm).append(outcome.ttft_s * 1000)
            (plain,), _ = common.run(uncached, [(prompt, cfg)])
            off.append(plain.ttft_s * 1000)
        log.info("salt %d: prompt %d tokens", salt, int(prompts[0].get_shape()[-1]))
    cold_p50, warm_p50, off_p50 = (statistics.median(x) for x in (cold, warm, off))
    log.info(
        "TTFT p50: cold %.0f ms (%d requests), warm %.0f ms (%d), prefix caching off %.0f ms "
        "(%d); warm / cold = %.3f (target <= 0.3)",
        cold_p50,
        len(cold),
        warm_p50,
        len(warm),
        off_p50,
        len(off),
        warm_p50 / cold_p50,
    )
    log.info("every TTFT (ms): cold %s warm %s off %s", _r(cold), _r(warm), _r(off))
    log.info("machine: %s", common.load_note())
    return 0


def _r(values: list[float]) -> list[int]:
    return [round(v) for v in values]


if __name__ == "__main__":
    sys.exit(main())
