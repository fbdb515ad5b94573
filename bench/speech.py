"""Text to speech: seconds of audio produced per wall second, the server against the pipeline.

Two ways of speaking the same texts (each two or three sentences):

- ``direct``: ``openvino_genai.Text2SpeechPipeline`` in this process, one ``generate`` per
  sentence (the pieces the server's engine cuts a text into), one after another (the pipeline
  serves one caller at a time); ``direct-whole`` gives it each text whole, for comparison:
  SpeechT5's attention costs grow with the length, so sentences are cheaper per second of audio;
- ``server``: the real ``ov-llm-server`` over HTTP (``/v1/audio/speech``, ``wav``), with 1 and 4
  requests in flight; its engine synthesises one sentence a step, one request at a time.

The model is a random-weight SpeechT5 of ``tests/tiny_speecht5.py`` (converted by
``ov-convert-model``'s workflow): no real SpeechT5 can be downloaded here. By default its
``base`` shape, that of microsoft/speecht5_tts and its HiFi-GAN (a real model's compute);
``--shape tiny`` the tests' model, which speaks a sentence in tens of milliseconds and so
shows the server's fixed costs rather than what a user sees. It never stops early, so every
text gives the same audio each time. Rounds alternate direct and server so that a noisy
neighbour weighs on both. Results go to ``<out>/speech-<shape>.json`` and ``.md``.

    python bench/speech.py [--shape base|tiny] [--rounds 3] [--texts 8] [--concurrency 1 4]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openvino as ov
import openvino_genai as og
from report import git_commit, machine_info  # bench/report.py: the same machine facts

from ov_llm_server.engine.core.speech import chunks

log = logging.getLogger("bench.speech")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"
SERVED_NAME = "bench-tts"
TARGET_RATIO = 0.95
SHAPE_NAMES = {
    "base": "base shape: speecht5_tts's 12+6 layers of width 768 and its HiFi-GAN",
    "tiny": "tiny shape: the tests' 2+2 layers of width 32",
}
SENTENCES = [
    "The kettle is on.",
    "Dinner will be ready at seven!",
    "Did you remember to water the plants?",
    "The train leaves from platform four.",
    "It might rain later, so take a coat.",
    "Turn left at the bakery.",
]


def texts(count: int) -> list[str]:
    """``count`` texts of two or three sentences each."""
    pick = [[SENTENCES[(i + k) % len(SENTENCES)] for k in range(2 + i % 2)] for i in range(count)]
    return [" ".join(sentences) for sentences in pick]


def _tests_module(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    return importlib.import_module(name)


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as reader:
        return reader.getnframes() / reader.getframerate()


class Direct:
    def __init__(self, model: Path, voice: Any) -> None:
        # The server computes a speech model on a CPU in f32 (placement.choose_precision).
        self.pipe = og.Text2SpeechPipeline(str(model), "CPU", INFERENCE_PRECISION_HINT="f32")
        self.voice = ov.Tensor(voice)

    def run(self, batch: list[str], whole: bool = False) -> tuple[float, float]:
        """(audio seconds, wall seconds) of speaking ``batch``, sentence by sentence unless
        ``whole``."""
        pieces = batch if whole else [piece for text in batch for piece in chunks(text)]
        started = time.perf_counter()
        audio = 0.0
        for text in pieces:
            result = self.pipe.generate(text, self.voice)
            audio += result.speeches[0].get_size() / result.output_sample_rate
        return audio, time.perf_counter() - started


async def server_run(base_url: str, batch: list[str], concurrency: int) -> tuple[float, float]:
    queue = list(batch)
    audio = 0.0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal audio
        while queue:
            text = queue.pop()
            body = {"model": SERVED_NAME, "input": text, "voice": "alloy", "response_format": "wav"}
            response = await client.post(f"{base_url}/v1/audio/speech", json=body)
            response.raise_for_status()
            audio += wav_seconds(response.content)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return audio, time.perf_counter() - started


def start_server(model: Path, workdir: Path) -> Any:
    live_server = _tests_module("live_server")
    registry = workdir / "registry.json"
    live_server.write_registry(
        registry, {SERVED_NAME: {"path": str(model), "task": "text-to-audio"}}
    )
    env = {
        "OV_DEVICE": "CPU",
        "OV_REGISTRY_PATH": str(registry),
        "OV_PRELOAD_MODELS": SERVED_NAME,
        "OV_LOG_LEVEL": "WARNING",
    }
    return live_server.LiveServer(workdir, env).start(timeout=300)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    tiny = _tests_module("tiny_speecht5")
    model = tiny.ensure_tiny_speecht5(shape=args.shape)["fp16"]
    batch = texts(args.texts)
    load_before = os.getloadavg()[0]
    direct = Direct(model, tiny.voice("alloy"))
    direct.run(batch[:2])  # warm-up: the first calls compile
    rates: dict[str, list[float]] = {"direct": [], "direct-whole": []}
    rates |= {f"server@{c}": [] for c in args.concurrency}
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as workdir:
        server = start_server(model, Path(workdir))
        try:
            asyncio.run(server_run(server.base_url, batch[:2], 1))
            for round_index in range(args.rounds):
                audio, wall = direct.run(batch)
                rates["direct"].append(audio / wall)
                audio, wall = direct.run(batch, whole=True)
                rates["direct-whole"].append(audio / wall)
                for concurrency in args.concurrency:
                    audio, wall = asyncio.run(server_run(server.base_url, batch, concurrency))
                    rates[f"server@{concurrency}"].append(audio / wall)
                log.info("round %d: %s", round_index + 1, {k: v[-1] for k, v in rates.items()})
        finally:
            server.stop()
    direct_rate = statistics.median(rates["direct"])
    levels = {
        name: {
            "audio_seconds_per_second": statistics.median(values),
            "ratio_to_direct": statistics.median(values) / direct_rate,
            "rounds": values,
        }
        for name, values in rates.items()
    }
    return {
        "benchmark": "speech",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "model": f"random-weight SpeechT5, {SHAPE_NAMES[args.shape]} (tests/tiny_speecht5.py), "
        "fp16 IR, f32 on CPU",
        "shape": args.shape,
        "texts": len(batch),
        # Other work on the machine weighs on both sides, unevenly from round to round.
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "rounds": args.rounds,
        "target_ratio": TARGET_RATIO,
        "levels": levels,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Text to speech: server against the direct Text2SpeechPipeline",
        "",
        f"{report['date']}, commit {report['commit']}; {report['model']}; "
        f"{report['texts']} texts of 2 to 3 sentences, median of {report['rounds']} rounds.",
        "",
        "| side | audio s per wall s | ratio to direct |",
        "| --- | ---: | ---: |",
    ]
    for name, level in report["levels"].items():
        lines.append(
            f"| {name} | {level['audio_seconds_per_second']:.2f} | {level['ratio_to_direct']:.2f} |"
        )
    before, after = report["load_average_1min"]
    lines += [
        "",
        f"Target: server at least {report['target_ratio']} times direct. One-minute load "
        f"average {before} before, {after} after.",
    ]
    if report["shape"] == "tiny":
        lines[-1] += (
            " The tiny model speaks a sentence in tens of milliseconds, so the HTTP round trip "
            "of each request weighs far more here than it would on a real SpeechT5, and with "
            "one request in flight the engine waits for it between requests."
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shape", choices=tuple(SHAPE_NAMES), default="base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    report = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"speech-{args.shape}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    sys.stdout.write(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
