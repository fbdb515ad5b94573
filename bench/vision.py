"""Vision: an image request through the server against ``VLMPipeline`` alone, one at a time.

Two ways of answering the same request (one drawn image and a question, greedy, a fixed
number of new tokens with the end token ignored):

- ``direct``: ``openvino_genai.VLMPipeline`` in this process on the same IR folder and
  precision, the prompt rendered by the model's chat template as the server renders it, the
  image decoded from the same PNG file by Pillow inside the timing (as an application reading
  an image must), a streamer stamping the first text;
- ``server``: the real ``ov-llm-server`` over HTTP, a streamed chat completion with the image
  as a ``data:`` URL (so the server's base64 and PNG decoding is in its time), stamped at the
  first content chunk.

Figures: time to first token (median) and tokens per second over the whole request
(completion tokens ÷ time to the last token, median). Rounds alternate direct and server so
that a noisy neighbour weighs on both. The model is a random-weight LLaVA of
``tests/tiny_vlm.py``: by default its ``small`` shape (a SmolLM2-135M-sized text model and a
ViT-B/14 vision tower, the compute of a real small VLM), ``--shape tiny`` the tests' model
(whose millisecond tokens show the server's fixed costs, not what a user sees), or
``--model`` another LLaVA-style IR folder. Results go to ``<out>/vision-<shape>.json`` and
``.md`` (``vision.json`` and ``.md`` for ``--model``).

    python bench/vision.py [--shape small|tiny | --model IR_FOLDER] [--tokens 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openvino as ov
import openvino_genai as og
from openai_stream import chat_body, stream_chat
from PIL import Image as PILImage
from report import git_commit, machine_info

log = logging.getLogger("bench.vision")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"
SERVED_NAME = "bench-vlm"
PRECISION = "f32"
TARGET_RATIO = 0.95
QUESTION = "What is in this picture?"
SHAPE_NAMES = {
    "small": "small shape: a 30-layer SmolLM2-135M-sized Llama, a 12-layer ViT-B/14 at 336",
    "tiny": "tiny shape: the tests' 2-layer model",
}


def _tests_module(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    return importlib.import_module(name)


def the_image() -> Any:
    return _tests_module("tiny_vlm").draw_image(500, 400)


def png_file(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


# ---------------------------------------------------------------- direct


class Direct:
    """``VLMPipeline`` alone, as an application would call it."""

    def __init__(self, model: Path) -> None:
        self.pipe = og.VLMPipeline(str(model), "CPU", INFERENCE_PRECISION_HINT=PRECISION)
        tokenizer = self.pipe.get_tokenizer()
        content = [{"type": "image"}, {"type": "text", "text": QUESTION}]
        messages = [{"role": "user", "content": content}]
        self.prompt = str(tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def run(self, png: bytes, tokens: int) -> tuple[float, float, int]:
        """(time to first token, time to the last, tokens generated) of one request."""
        config = og.GenerationConfig(max_new_tokens=tokens, do_sample=False, ignore_eos=True)
        config.apply_chat_template = False
        stamps: list[float] = []

        def streamer(text: str) -> og.StreamingStatus:
            if text:
                stamps.append(time.perf_counter())
            return og.StreamingStatus.RUNNING

        started = time.perf_counter()
        with PILImage.open(io.BytesIO(png)) as image:
            pixels = ov.Tensor(np.array(image.convert("RGB")))
        result = self.pipe.generate(
            self.prompt, images=[pixels], generation_config=config, streamer=streamer
        )
        ended = time.perf_counter()
        generated = int(result.perf_metrics.get_num_generated_tokens())
        return stamps[0] - started, ended - started, generated


# ---------------------------------------------------------------- server


def start_server(model: Path, workdir: Path) -> Any:
    live_server = _tests_module("live_server")
    registry = workdir / "registry.json"
    live_server.write_registry(
        registry,
        {
            SERVED_NAME: {
                "path": str(model),
                "task": "image-text-to-text",
                "inference_precision": PRECISION,
            }
        },
    )
    env = {
        "OV_DEVICE": "CPU",
        "OV_REGISTRY_PATH": str(registry),
        "OV_PRELOAD_MODELS": SERVED_NAME,
        "OV_LOG_LEVEL": "WARNING",
    }
    return live_server.LiveServer(workdir, env).start(timeout=300)


async def server_run(base_url: str, url: str, tokens: int) -> tuple[float, float, int]:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": QUESTION},
            ],
        }
    ]
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        result = await stream_chat(client, chat_body(SERVED_NAME, messages, tokens))
    return result.ttft_s, result.last_s, int(result.completion_tokens or 0)


# ---------------------------------------------------------------- measuring


def measure(model: Path, tokens: int, rounds: int) -> dict[str, Any]:
    png = png_file(the_image())
    url = data_url(png)
    direct = Direct(model)
    with tempfile.TemporaryDirectory(prefix="bench-vision-") as tmp:
        server = start_server(model, Path(tmp))
        try:
            # One warm-up each: the first request compiles and allocates.
            direct.run(png, tokens)
            asyncio.run(server_run(server.base_url, url, tokens))
            runs: dict[str, list[tuple[float, float, int]]] = {"direct": [], "server": []}
            for index in range(rounds):
                order = ["direct", "server"] if index % 2 == 0 else ["server", "direct"]
                for side in order:
                    if side == "direct":
                        runs[side].append(direct.run(png, tokens))
                    else:
                        runs[side].append(asyncio.run(server_run(server.base_url, url, tokens)))
        finally:
            server.stop()
    sides = {}
    for side, results in runs.items():
        sides[side] = {
            "ttft_ms": round(statistics.median(r[0] for r in results) * 1000, 1),
            "tokens_per_s": round(statistics.median(r[2] / r[1] for r in results), 1),
            "tokens": [r[2] for r in results],
        }
    return {
        **sides,
        # Lower is better for TTFT: its ratio is direct ÷ server, so >= 1 means as fast.
        "ttft_ratio": round(sides["direct"]["ttft_ms"] / sides["server"]["ttft_ms"], 3),
        "tokens_per_s_ratio": round(
            sides["server"]["tokens_per_s"] / sides["direct"]["tokens_per_s"], 3
        ),
    }


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    direct, server = report["direct"], report["server"]
    worst = min(report["ttft_ratio"], report["tokens_per_s_ratio"])
    verdict = "met" if worst >= TARGET_RATIO else "NOT met"
    return "\n".join(
        [
            f"Model: **{report['model']['name']}**, device CPU, computing in {PRECISION}, one "
            f"{report['image']} PNG image and a question, {report['tokens']} new tokens, one "
            f"request at a time, median of {report['rounds']} rounds; {machine['cores']} "
            f"cores ({machine['cpu']}), openvino-genai {machine['openvino_genai']}, "
            f"{report['date']}, load average at start {machine['load_average_at_start'][0]}.",
            "",
            "| | TTFT ms | tok/s |",
            "|---|---:|---:|",
            f"| direct `VLMPipeline` | {direct['ttft_ms']} | {direct['tokens_per_s']} |",
            f"| server (streamed, image as a data: URL) | {server['ttft_ms']} "
            f"| {server['tokens_per_s']} |",
            f"| server ÷ direct (TTFT: direct ÷ server) | {report['ttft_ratio']:.2f} "
            f"| {report['tokens_per_s_ratio']:.2f} |",
            "",
            f"Target: >= {TARGET_RATIO} for both: {verdict}.",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a LLaVA-style VLM IR folder (instead of --shape)")
    parser.add_argument("--shape", choices=("small", "tiny"), default="small")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    machine = machine_info()
    if args.model:
        model = Path(args.model).expanduser().resolve()
        name, stem = model.name, "vision"
    else:
        model = _tests_module("tiny_vlm").ensure_tiny_vlm(shape=args.shape)["ir"]
        name = f"random-weight LLaVA, {SHAPE_NAMES[args.shape]} (tests/tiny_vlm.py, fp16)"
        stem = f"vision-{args.shape}"
    results = measure(model, args.tokens, args.rounds)
    image = the_image()
    report = {
        "model": {"name": name, "path": str(model)},
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine,
        "image": f"{image.width}x{image.height}",
        "tokens": args.tokens,
        "rounds": args.rounds,
        "target_ratio": TARGET_RATIO,
        **results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    table = markdown(report)
    (args.out / f"{stem}.md").write_text(table + "\n", "utf-8")
    sys.stdout.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
