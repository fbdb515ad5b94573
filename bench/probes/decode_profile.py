"""Where one decode step's time goes on CPU: OpenVINO's per-node performance counters.

    PYTHONPATH=app:tests:bench python -m probes.decode_profile [--steps 64] [--threads N]

The continuous-batching pipeline hides its infer request, so this compiles the same IR
(SmolLM2 int8, stateful, SDPA: the path ``LLMPipeline`` runs) with ``PERF_COUNT`` on, prefills
a chat prompt, then runs single-token decode steps, and sums ``get_profiling_info()`` per
node type and per kernel. What it shows for one stream carries over to the paged-attention
pipeline except for the attention node itself (``PagedAttentionExtension`` there).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np
import openvino as ov

from probes import common
from probes.common import log


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS (0: auto)")
    parser.add_argument("--kv", default="", help="KV_CACHE_PRECISION (default: the plugin's)")
    args = parser.parse_args(argv)
    log.info("machine: %s", common.load_note())
    smol = common.smollm2()
    core = ov.Core()
    config: dict[str, object] = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    if args.threads:
        config["INFERENCE_NUM_THREADS"] = args.threads
    if args.kv:
        config["KV_CACHE_PRECISION"] = args.kv
    compiled = core.compile_model(str(smol / "openvino_model.xml"), "CPU", config)
    log.info(
        "compiled: threads %s, KV cache %s, inference precision %s",
        compiled.get_property("INFERENCE_NUM_THREADS"),
        compiled.get_property("KV_CACHE_PRECISION"),
        compiled.get_property("INFERENCE_PRECISION_HINT"),
    )
    request = compiled.create_infer_request()
    import openvino_genai as og

    tokenizer = og.Tokenizer(str(smol))
    prompt = common.encode(tokenizer, [{"role": "user", "content": "Tell me about lighthouses."}])
    ids = np.array(prompt.data, dtype=np.int64)
    length = ids.shape[1]

    def infer(tokens: np.ndarray, start: int) -> int:
        count = tokens.shape[1]
        request.infer(
            {
                "input_ids": tokens,
                "attention_mask": np.ones((1, start + count), dtype=np.int64),
                "position_ids": np.arange(start, start + count, dtype=np.int64)[None, :],
                "beam_idx": np.zeros((1,), dtype=np.int32),
            }
        )
        return int(request.get_tensor("logits").data[0, -1].argmax())

    request.reset_state()
    token = infer(ids, 0)
    position = length
    by_type: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    lm_head = 0.0
    node_total = 0.0
    walls = []
    for _ in range(args.steps):
        started = time.perf_counter()
        token = infer(np.array([[token]], dtype=np.int64), position)
        walls.append(time.perf_counter() - started)
        position += 1
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            micro = info.real_time.total_seconds() * 1e6
            node_total += micro
            by_type[info.node_type] += micro
            by_kernel[f"{info.node_type}:{info.exec_type}"] += micro
            if info.node_type == "FullyConnected" and "lm_head" in info.node_name.lower():
                lm_head += micro
    steps = args.steps
    wall_ms = 1000 * sum(walls) / steps
    nodes_ms = node_total / 1000 / steps
    log.info(
        "decode step at position %d..%d: wall %.2f ms (p50 %.2f), nodes %.2f ms, outside the "
        "nodes (infer call, Python, state) %.2f ms",
        length,
        position,
        wall_ms,
        1000 * sorted(walls)[steps // 2],
        nodes_ms,
        wall_ms - nodes_ms,
    )
    for name, micro in sorted(by_type.items(), key=lambda kv: -kv[1])[:10]:
        log.info("  %-28s %6.2f ms  %5.1f %%", name, micro / 1000 / steps, 100 * micro / node_total)
    log.info("by kernel:")
    for name, micro in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:10]:
        log.info("  %-44s %6.2f ms  %5.1f %%", name, micro / 1000 / steps, 100 * micro / node_total)
    if lm_head:
        log.info("  of which the LM head: %.2f ms", lm_head / 1000 / steps)
    weights = sum((smol / f).stat().st_size for f in ("openvino_model.bin",))
    log.info(
        "weights %.0f MB: at %.2f ms a step that is %.1f GB/s if every byte is read once",
        weights / 1e6,
        wall_ms,
        weights / 1e9 / (wall_ms / 1000),
    )
    log.info("machine: %s", common.load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
