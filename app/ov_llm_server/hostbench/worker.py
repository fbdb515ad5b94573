"""One model on one device, timed: the benchmark's child process, the engine's own pipeline.

    python -m ov_llm_server.hostbench.worker --model PATH --config JSON --max-tokens 64

The pipeline comes from ``build_pipeline`` with the server's ``EngineConfig`` and is stepped
from one thread, as the engine process does; requests get the engine's ``GenerationConfig``
(the model's defaults, greedy, ``ignore_eos`` so that every answer has the same length). Its
own process, so that the peak RSS is the pipeline's alone and a driver crash stays here.
Progress goes to stderr; the result is one JSON object on the original stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgspec

from ..engine.messages import EngineConfig, SamplingParams

PROMPTS = (
    "Explain in a few sentences why the sky is blue.",
    "Write a short story about a robot who learns to paint.",
    "List some tips for staying focused while working from home.",
)
STREAMS = 4
WARM_UP_TOKENS = 4


@dataclass
class Stream:
    """One request's timeline: when it went in, and when each of its tokens came out."""

    submitted: float
    stamps: list[float] = field(default_factory=list)


def progress(text: str) -> None:
    sys.stderr.write(f"    {text}\n")
    sys.stderr.flush()


def decode_rate(streams: list[Stream]) -> float:
    """Tokens per second once every stream has its first token: decode, without prefill."""
    start = max(s.stamps[0] for s in streams)
    end = max(s.stamps[-1] for s in streams)
    tokens = sum(1 for s in streams for stamp in s.stamps if stamp > start)
    return tokens / (end - start) if end > start else 0.0


class Bench:
    def __init__(self, path: Path, config: EngineConfig) -> None:
        import openvino_genai as og

        from ..engine.core.pipelines import build_pipeline
        from ..engine.core.sampling import model_defaults

        self._og = og
        started = time.perf_counter()
        self.pipe = build_pipeline(path, config)
        self.load_seconds = time.perf_counter() - started
        self.tokenizer = self.pipe.get_tokenizer()
        self.defaults = model_defaults(self.pipe.get_config())
        self.template = bool(self.tokenizer.chat_template)

    def prompt_ids(self, prompt: str) -> Any:
        text = prompt
        if self.template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True
            )
        return self.tokenizer.encode(text, add_special_tokens=False).input_ids

    def run(self, prompts: list[str], max_tokens: int) -> list[Stream]:
        """All ``prompts`` at once, stepped to the end."""
        from ..engine.core.sampling import generation_config

        params = SamplingParams(max_new_tokens=max_tokens, temperature=0, ignore_eos=True)
        config = generation_config(params, self.defaults, max_tokens)
        handles = []
        for request_id, prompt in enumerate(prompts):
            ids = self.prompt_ids(prompt)
            handle = self.pipe.add_request(request_id, ids, config)
            handles.append((handle, Stream(time.perf_counter())))
        running = self._og.GenerationStatus.RUNNING
        active = list(handles)
        while active:
            self.pipe.step()
            now = time.perf_counter()
            for handle, stream in list(active):
                if handle.can_read():
                    for output in handle.read().values():
                        stream.stamps.extend([now] * len(output.generated_ids))
                if handle.get_status() != running and not handle.can_read():
                    active.remove((handle, stream))
        return [stream for _, stream in handles]


def device_facts(device: str) -> dict[str, Any]:
    import openvino as ov

    core = ov.Core()
    facts: dict[str, Any] = {"openvino": ov.get_version()}
    for key, name in (("device_name", "FULL_DEVICE_NAME"),):
        try:
            facts[key] = str(core.get_property(device, name))
        except Exception:
            facts[key] = None
    for key, target in (("cpu_precision", "CPU"), ("device_precision", device)):
        try:
            facts[key] = core.get_property(target, "INFERENCE_PRECISION_HINT").get_type_name()
        except Exception:
            facts[key] = None
    return facts


def bench(path: Path, config: EngineConfig, max_tokens: int, prompts: int) -> dict[str, Any]:
    chosen = [PROMPTS[i % len(PROMPTS)] for i in range(prompts)]
    progress(f"loading {path.name} on {config.device}")
    runner = Bench(path, config)
    progress(f"loaded in {runner.load_seconds:.2f} s; warming up")
    runner.run(chosen[:1], WARM_UP_TOKENS)
    ttft, rates = [], []
    for index, prompt in enumerate(chosen, 1):
        (stream,) = runner.run([prompt], max_tokens)
        ttft.append(stream.stamps[0] - stream.submitted)
        rates.append(decode_rate([stream]))
        progress(
            f"1 stream, prompt {index}/{len(chosen)}: first token {ttft[-1] * 1000:.0f} ms, "
            f"{rates[-1]:.1f} tok/s"
        )
    streams = runner.run([chosen[i % len(chosen)] for i in range(STREAMS)], max_tokens)
    batch_rate = decode_rate(streams)
    progress(f"{STREAMS} streams: {batch_rate:.1f} tok/s in all")
    return {
        **device_facts(config.device),
        "load_seconds": runner.load_seconds,
        "ttft_seconds": ttft,
        "decode_1_stream_runs": rates,
        "decode_1_stream": statistics.median(rates),
        "decode_4_streams": batch_rate,
        "tokens_per_request": [len(s.stamps) for s in streams],
        # ru_maxrss is in KiB on Linux: the process's high-water mark, pipeline and all.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv: list[str] | None = None) -> int:
    result_stream: TextIO = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever native code prints must not corrupt the result
    sys.stdout = sys.stderr
    parser = argparse.ArgumentParser(prog="python -m ov_llm_server.hostbench.worker")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--config", required=True, help="the EngineConfig as JSON")
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--prompts", type=int, required=True)
    args = parser.parse_args(argv)
    config = msgspec.json.decode(args.config, type=EngineConfig)
    try:
        result = bench(args.model, config, args.max_tokens, args.prompts)
    except Exception as exc:
        result = {"error": " ".join(str(exc).split())[:500] or type(exc).__name__}
    json.dump(result, result_stream)
    result_stream.write("\n")
    result_stream.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
