"""Where an embedding request's time goes, one input at a time, on the benchmark's model.

    PYTHONPATH=app:tests:bench python -m probes.embed_costs [--calls 200] [--gap-ms 0 5]

In this process, wall and CPU time per call of:

- ``pipeline``: ``TextEmbeddingPipeline.embed_documents`` alone (the benchmark's ``direct``);
- ``engine``: ``EmbeddingModel.run``, what the engine's step runs (the pipeline, plus the
  tokenizer call that counts tokens for ``usage`` and the length checks);
- ``tokenizer``: that tokenizer call alone;

back to back, then with a pause between calls (a server's calls come with gaps: the
request's way in and the answer's way out). CPU time is the process's, every thread.

Then the real server, one request at a time as the benchmark's first level sends them
(``embeddings.server_run``, base64): wall time per request, and the CPU time each of the
three processes spent on it (the benchmark's client, the HTTP process, the engine process).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import embeddings  # bench/embeddings.py: the model and the texts
import measure  # bench/measure.py: the server's process tree

from ov_llm_server.engine.core.encoders import EmbeddingModel

log = logging.getLogger("probes.embed_costs")


def timed(call: Callable[[str], object], texts: list[str], gap: float) -> tuple[float, float]:
    """Means over ``texts``: (wall ms, CPU ms) per call."""
    wall = cpu = 0.0
    for text in texts:
        if gap:
            time.sleep(gap)
        w, c = time.perf_counter(), time.process_time()
        call(text)
        wall += time.perf_counter() - w
        cpu += time.process_time() - c
    return wall * 1000 / len(texts), cpu * 1000 / len(texts)


def served(model: Path, rounds: int) -> None:
    server = embeddings.start_server(model, Path(tempfile.mkdtemp(prefix="embed-costs-")), 32)
    try:
        assert server.process is not None

        def run(inputs: list[str]) -> float:
            return asyncio.run(embeddings.server_run(server.base_url, inputs, 1, 1, "base64"))

        run(embeddings.texts(20, 998))  # warm-up; the engine process exists from here
        http, *engines = measure.process_tree(server.process.pid)

        def cpu_s() -> tuple[float, float, float]:
            """CPU seconds so far: this process (the client), the HTTP one, its engines."""
            engine = sum(sum(e.cpu_times()[:2]) for e in engines)
            return time.process_time(), sum(http.cpu_times()[:2]), engine

        for index in range(rounds):
            inputs = embeddings.texts(128, 1000 + index)
            before = cpu_s()
            wall = run(inputs)
            client, http_ms, engine_ms = (
                (a - b) * 1000 / len(inputs) for a, b in zip(cpu_s(), before, strict=True)
            )
            log.info(
                "server, 1 in flight: wall %.2f ms/request; cpu ms/request: client %.2f, "
                "http %.2f, engine %.2f",
                wall * 1000 / len(inputs),
                client,
                http_ms,
                engine_ms,
            )
    finally:
        server.stop()


def in_process(path: Path, calls_per_gap: int, gaps_ms: list[float]) -> None:
    model = EmbeddingModel(path, "CPU")
    pipe = model._pipe  # noqa: SLF001 - the very pipeline the engine calls
    calls: dict[str, Callable[[str], object]] = {
        "pipeline": lambda text: pipe.embed_documents([text]),
        "engine": lambda text: model.run([text]),
        "tokenizer": lambda text: model.tokenizer.encode([text]),
    }
    texts = embeddings.texts(calls_per_gap, 7)
    for call in calls.values():  # warm-up
        timed(call, texts[:20], 0)
    log.info("%d calls of one input each, %d cores", calls_per_gap, os.cpu_count() or 0)
    for gap in gaps_ms:
        for name, call in calls.items():
            wall, cpu = timed(call, texts, gap / 1000)
            log.info("gap %4.1f ms  %-9s  wall %6.2f ms  cpu %6.2f ms", gap, name, wall, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, nargs="+", default=[0.0, 5.0])
    parser.add_argument("--rounds", type=int, default=3, help="of the server part")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    path = embeddings.ensure_model()
    in_process(path, args.calls, args.gap_ms)
    served(path, args.rounds)


if __name__ == "__main__":
    main()
