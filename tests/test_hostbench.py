"""``ov-llm-server bench`` for real: the tiny model through the server's pipeline on the CPU,
a device that is not there, and the report's shape; the roofline's arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ov_llm_server.hostbench.cli import choose_models
from ov_llm_server.hostbench.roofline import TARGET_BANDWIDTH, ceiling, weight_bytes
from ov_llm_server.settings import Settings


def bench(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OV_")}
    return subprocess.run(
        [sys.executable, "-m", "ov_llm_server", "bench", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=600,
        check=False,
    )


def test_bench_on_cpu_and_a_missing_device(tiny_ir_int8: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps(
            {
                "version": 1,
                "models": {
                    "tiny": {"path": str(tiny_ir_int8), "weight_format": "int8"},
                    "an-embedder": {"path": str(tmp_path), "task": "feature-extraction"},
                },
            }
        )
    )
    out = tmp_path / "out"
    # GPU.7 exists on no machine: its run fails in its own process, the CPU's still counts.
    result = bench(
        "--device", "CPU", "--device", "GPU.7", "--max-tokens", "16", "--prompts", "2",
        "--output", str(out),
        OV_REGISTRY_PATH=str(registry), OV_DEVICE="CPU",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "[1/2] tiny on CPU" in result.stderr and "[2/2] tiny on GPU.7" in result.stderr
    assert "1 stream, prompt 2/2: first token" in result.stderr

    report: dict[str, Any] = json.loads((out / "ov-llm-server-bench.json").read_text())
    assert report["schema"] == 1
    assert report["command"] == (
        "ov-llm-server bench --device CPU --device GPU.7 --max-tokens 16 --prompts 2"
    )
    assert report["host"]["cpu_precision"] in {"f32", "bf16", "f16"}
    assert report["host"]["openvino"].startswith("2026.4")
    assert report["roofline"]["bandwidth_bytes_per_second"] == TARGET_BANDWIDTH
    assert report["workload"]["engine_config"]["max_batch"] == 8
    cpu, gpu7 = report["results"]
    assert (cpu["model"], cpu["device"], cpu["error"]) == ("tiny", "CPU", None)
    assert gpu7["device"] == "GPU.7" and gpu7["error"]
    assert cpu["weight_bytes"] == (tiny_ir_int8 / "openvino_model.bin").stat().st_size
    assert cpu["load_seconds"] > 0 and cpu["ttft_seconds"] > 0
    assert len(cpu["ttft_seconds_runs"]) == len(cpu["decode_1_stream_runs"]) == 2
    for key, streams in (("decode_1_stream", 1), ("decode_4_streams", 4)):
        decode = cpu[key]
        assert decode["tokens_per_second"] > 0
        assert decode["roofline_tokens_per_second"] == pytest.approx(
            streams * TARGET_BANDWIDTH / cpu["weight_bytes"]
        )
        assert decode["roofline_fraction"] == pytest.approx(
            decode["tokens_per_second"] / decode["roofline_tokens_per_second"]
        )
    assert cpu["peak_rss_bytes"] > 50 * 2**20  # the interpreter and OpenVINO alone take more

    markdown = (out / "ov-llm-server-bench.md").read_text()
    assert markdown == result.stdout
    assert markdown.startswith("# ov-llm-server bench\n")
    assert "this machine's own bandwidth is unknown" in markdown
    (row,) = [line for line in markdown.splitlines() if line.startswith("| tiny | CPU")]
    assert row.count("% of ") == 2
    assert "- tiny on GPU.7: " in markdown


def test_bench_refuses_a_model_that_is_not_there(tmp_path: Path) -> None:
    result = bench("--model", str(tmp_path / "nothing"), OV_REGISTRY_PATH=str(tmp_path / "r.json"))
    assert result.returncode == 2
    assert "no such model" in result.stderr


def test_models_chosen_from_the_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps(
            {
                "version": 1,
                "models": {
                    "chat": {"path": "models/chat"},
                    "embed": {"path": "models/embed", "task": "feature-extraction"},
                    "rerank": {"path": "models/rerank", "task": "text-classification"},
                },
            }
        )
    )
    settings = Settings.model_validate({"registry_path": registry})
    assert [(m.name, m.path) for m in choose_models(settings, None)] == [
        ("chat", tmp_path / "models" / "chat")
    ]
    assert [m.name for m in choose_models(settings, "embed")] == ["embed"]
    gguf = choose_models(settings, "/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert [m.name for m in gguf] == ["SmolLM2-135M-Instruct.Q4_1"]
    empty = Settings.model_validate({"registry_path": tmp_path / "none.json"})
    assert choose_models(empty, None) == []
    fallback = empty.model_copy(update={"model_path": tmp_path / "m.gguf"})
    assert [m.name for m in choose_models(fallback, None)] == ["m"]


def test_roofline_of_the_target_host(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"\0" * 1000)
    ir = tmp_path / "ir"
    ir.mkdir()
    (ir / "openvino_model.bin").write_bytes(b"\0" * 500)
    (ir / "openvino_tokenizer.bin").write_bytes(b"\0" * 300)  # not read per token
    assert (weight_bytes(gguf), weight_bytes(ir), weight_bytes(tmp_path)) == (1000, 500, None)
    # SmolLM2-135M at Q4_1, about 92 MB: about 460 tok/s is the most 42.7 GB/s can feed.
    assert ceiling(92_000_000) == pytest.approx(464.1, abs=0.1)
    assert ceiling(92_000_000, 4) == pytest.approx(4 * ceiling(92_000_000))
