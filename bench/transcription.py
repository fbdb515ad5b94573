"""Transcription: the server against the pipeline it wraps, as a real-time factor (seconds of
audio transcribed per wall second) at 1 and 4 concurrent requests.

- ``direct``: ``openvino_genai.WhisperPipeline`` in this process, on the CPU in f32 as the
  server runs it, each file decoded with PyAV (as the server decodes uploads) and transcribed
  whole, with timestamps; GenAI's pipeline serves one call at a time, so ``c`` concurrent
  files are ``c`` calls in a row: the best one pipeline can do;
- ``server``: the real ``ov-llm-server`` over HTTP, exactly ``c`` uploads in flight, asking
  for ``verbose_json`` (timestamps), its engine serving 30 s windows in turns.

Both sides decode in Whisper's timestamp mode: GenAI transcribes audio longer than 30 s only
in that mode (it seeks by the timestamps), and a random model writes many more tokens without
it, which would compare two different amounts of work.

The audio is speech (``espeak-ng``, or the synthetic voice of tests/tiny_whisper.py) with
pauses: by default 28 s of it, one Whisper window, so that both sides transcribe exactly the
same input (the report says whether their texts are equal). ``--seconds 60`` crosses window
boundaries; there GenAI seeks by the timestamps the model writes and the server cuts each
window at its quietest moment, so the two see different windows, and a random model, whose
answers end by chance, may write many more tokens on one side than on the other. Rounds
alternate direct and server so that a noisy neighbour weighs on both. No Whisper weights can be
downloaded on the build machines, so the model is a random Whisper of
``tests/tiny_whisper.py``: by default its ``base`` shape (whisper-base's layers and widths, up
to 128 tokens a window: a real model's compute), ``--shape tiny`` the tests' model (24 tokens
a window, transcribed in milliseconds: it shows the server's fixed costs rather than what a
user sees); give ``--model`` an IR folder of a real one (e.g. whisper-base converted by
``ov-convert-model``) on a real host. Results go to ``<out>/transcription-<shape>.json`` and
``.md`` (``transcription.*`` for ``--model``; ``-<seconds>s`` added to other lengths).

    python bench/transcription.py [--shape base|tiny | --model IR_FOLDER] [--seconds 28]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
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
import numpy as np
import openvino_genai as og
from report import git_commit, machine_info  # bench/report.py: the same machine facts

from ov_llm_server.engine.core.precision import hint_properties
from ov_llm_server.engine.core.transcribe import window_end

log = logging.getLogger("bench.transcription")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"
SERVED_NAME = "bench-whisper"
SERVED_PRECISION = "f32"  # what the server's auto precision gives a speech model on a CPU
TARGET_RATIO = 0.95
SHAPE_NAMES = {
    "base": "base shape: whisper-base's 6+6 layers of width 512, up to 128 tokens a window",
    "tiny": "tiny shape: the tests' 2+2 layers of width 64, 24 tokens a window",
}
SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
DEFAULT_SECONDS = 28  # one Whisper window


def tests_module(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    return importlib.import_module(name)


def speech_file(seconds: float) -> tuple[bytes, float, str]:
    """An Ogg/Opus file of ``seconds`` of speech with pauses; its length and voice."""
    tiny_whisper = tests_module("tiny_whisper")
    voice, how = tiny_whisper.spoken()
    pause = np.zeros(SAMPLE_RATE, dtype=np.float32)
    parts: list[Any] = []
    while sum(len(p) for p in parts) < seconds * SAMPLE_RATE:
        parts += [voice, pause]
    samples = np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]
    return tiny_whisper.encode(samples, "ogg"), len(samples) / SAMPLE_RATE, how


class Direct:
    def __init__(self, model: Path) -> None:
        self.pipe = og.WhisperPipeline(str(model), "CPU", **hint_properties(SERVED_PRECISION))
        self.decode = tests_module("tiny_whisper").decode_with_av

    def run(self, data: bytes, concurrency: int, *, windows: bool = False) -> float:
        started = time.perf_counter()
        for _ in range(concurrency):
            if windows:
                self.windows(data)
            else:
                self.transcribe(data)
        return time.perf_counter() - started

    def windows(self, data: bytes) -> None:
        """The pipeline called once a window, the windows cut as the server's engine cuts them."""
        samples = self.decode(data)
        start = 0
        while start < len(samples):
            end = window_end(samples, start)
            self.pipe.generate(samples[start:end], language="<|en|>", return_timestamps=True)
            start = end

    def transcribe(self, data: bytes) -> str:
        """The text of the segments that start within the audio: what the server keeps (a
        random model also writes some for the padding after the audio's end)."""
        samples = self.decode(data)
        answer = self.pipe.generate(samples, language="<|en|>", return_timestamps=True)
        seconds = len(samples) / SAMPLE_RATE
        return "".join(str(c.text) for c in answer.chunks if float(c.start_ts) < seconds)


def start_server(model: Path, workdir: Path) -> Any:
    live_server = tests_module("live_server")
    registry = workdir / "registry.json"
    task = "automatic-speech-recognition-with-past"
    live_server.write_registry(registry, {SERVED_NAME: {"path": str(model), "task": task}})
    env = {
        "OV_DEVICE": "CPU",
        "OV_REGISTRY_PATH": str(registry),
        "OV_PRELOAD_MODELS": SERVED_NAME,
        "OV_LOG_LEVEL": "WARNING",
    }
    return live_server.LiveServer(workdir, env).start(timeout=300)


async def server_run(base_url: str, data: bytes, concurrency: int) -> tuple[float, str]:
    """Seconds for ``concurrency`` uploads of ``data``, all in flight at once, and the text."""

    async def one(client: httpx.AsyncClient) -> str:
        response = await client.post(
            "/v1/audio/transcriptions",
            data={"model": SERVED_NAME, "language": "en", "response_format": "verbose_json"},
            files={"file": ("speech.ogg", data)},
        )
        if response.status_code != 200:
            raise RuntimeError(f"server answered {response.status_code}: {response.text}")
        return str(response.json()["text"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        texts = await asyncio.gather(*(one(client) for _ in range(concurrency)))
        return time.perf_counter() - started, texts[0]


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    data, duration, voice = speech_file(args.seconds)
    direct = Direct(model)
    workdir = Path(tempfile.mkdtemp(prefix="bench-transcription-"))
    server = start_server(model, workdir)
    levels: list[dict[str, Any]] = []
    try:
        # Warm-up (the first calls compile kernels), and the texts each side gives.
        direct_text = direct.transcribe(data)
        server_text = asyncio.run(server_run(server.base_url, data, 1))[1]
        for concurrency in args.concurrency:
            modes = ["direct", "server"] + (["windows"] if duration > WINDOW_SECONDS else [])
            seconds: dict[str, list[float]] = {mode: [] for mode in modes}
            for index in range(args.rounds):
                for mode in modes if index % 2 == 0 else modes[::-1]:
                    if mode == "direct":
                        took = direct.run(data, concurrency)
                    elif mode == "windows":
                        took = direct.run(data, concurrency, windows=True)
                    else:
                        took = asyncio.run(server_run(server.base_url, data, concurrency))[0]
                    seconds[mode].append(took)
            rtf = {m: concurrency * duration / statistics.median(s) for m, s in seconds.items()}
            levels.append(
                {
                    "concurrency": concurrency,
                    "rounds": args.rounds,
                    "direct_rtf": round(rtf["direct"], 2),
                    "server_rtf": round(rtf["server"], 2),
                    "ratio": round(rtf["server"] / rtf["direct"], 3),
                }
            )
            if "windows" in rtf:
                levels[-1]["windows_rtf"] = round(rtf["windows"], 2)
                levels[-1]["ratio_to_windows"] = round(rtf["server"] / rtf["windows"], 3)
            log.info("level %s", levels[-1])
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "levels": levels,
        "audio_seconds": round(duration, 2),
        "voice": voice,
        # The server strips the text's leading space, as OpenAI's API does.
        "same_text": direct_text.strip() == server_text.strip(),
    }


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"Model: **{report['model_name']}**, device CPU in {SERVED_PRECISION}, "
        f"{report['audio_seconds']} s of Ogg/Opus speech ({report['voice']}) per request, "
        f"{machine['cores']} cores ({machine['cpu']}), openvino-genai "
        f"{machine['openvino_genai']}, {report['date']}, load average at start "
        f"{machine['load_average_at_start'][0]}. Real-time factor: seconds of audio "
        "transcribed per wall second, over all concurrent requests.",
        "",
        "| concurrent requests | direct RTF | server RTF | server ÷ direct |",
        "|---:|---:|---:|---:|",
    ]
    for level in report["levels"]:
        lines.append(
            f"| {level['concurrency']} | {level['direct_rtf']} | {level['server_rtf']} "
            f"| {level['ratio']:.2f} |"
        )
    worst = min(level["ratio"] for level in report["levels"])
    verdict = "met" if worst >= TARGET_RATIO else "NOT met"
    lines += [
        "",
        f"Target: server ÷ direct >= {TARGET_RATIO} at every level: {verdict} (lowest "
        f"{worst:.2f}). The server's text is "
        f"{'the same as' if report['same_text'] else 'NOT the same as'} the direct pipeline's.",
    ]
    if report["audio_seconds"] > WINDOW_SECONDS:
        lines += [
            "",
            f"Over {WINDOW_SECONDS} s the two sides see different windows: GenAI moves on to "
            "the last timestamp the model wrote, the server cuts each window at its quietest "
            "moment. A random model's answers end by chance, so each side decodes a different "
            "number of tokens. The direct pipeline called once a window, cut as the server "
            "cuts them, tells the two apart (server ÷ that):",
            "",
            "| concurrent requests | direct RTF, the server's windows | server ÷ that |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {level['concurrency']} | {level['windows_rtf']} | {level['ratio_to_windows']:.2f} |"
            for level in report["levels"]
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Whisper IR folder (instead of --shape)")
    parser.add_argument("--shape", choices=tuple(SHAPE_NAMES), default="base")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="audio a request")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.model:
        model, name, stem = Path(args.model), Path(args.model).name, "transcription"
    else:
        model = tests_module("tiny_whisper").ensure_tiny_whisper(shape=args.shape)["fp16"]
        name = f"random-weight Whisper, {SHAPE_NAMES[args.shape]} (tests/tiny_whisper.py, fp16 IR)"
        stem = f"transcription-{args.shape}"
    if args.seconds != DEFAULT_SECONDS:
        stem += f"-{args.seconds:g}s"
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "model_name": name,
        **measure(args, model),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report) + "\n")
    sys.stdout.write(markdown(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
