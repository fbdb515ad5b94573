"""Where each model runs: the registry's ``device``, the int4 rule and OV_INT4_DEVICE; and in
which precision: the registry's ``inference_precision`` and OV_INFERENCE_PRECISION."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ov_llm_server.placement import (
    choose_device,
    choose_precision,
    device_choices,
    gguf_weight_format,
    int4_warning,
    is_low_bit,
    targets_gpu,
)
from ov_llm_server.registry import ModelEntry, parse_registry
from ov_llm_server.settings import Settings


def settings(**values: object) -> Settings:
    return Settings.model_validate(values)


@pytest.mark.parametrize(
    ("device", "choices", "gpu"),
    [
        ("GPU", (["GPU"], []), True),
        ("GPU.0", (["GPU.0"], []), True),
        ("gpu.1", (["gpu.1"], []), True),
        ("CPU", (["CPU"], []), False),
        ("NPU", (["NPU"], []), False),
        ("AUTO", ([], []), True),
        ("AUTO:GPU,CPU", (["GPU", "CPU"], []), True),
        ("AUTO:CPU", (["CPU"], []), False),
        ("AUTO:-GPU", ([], ["GPU"]), False),
        ("AUTO:-CPU", ([], ["CPU"]), True),
        ("MULTI:CPU,GPU.1", (["CPU", "GPU.1"], []), True),
        ("HETERO:GPU,CPU", (["GPU", "CPU"], []), True),
        ("BATCH:GPU(4)", (["GPU"], []), True),
        ("BATCH:CPU(2)", (["CPU"], []), False),
    ],
)
def test_device_strings(device: str, choices: tuple[list[str], list[str]], gpu: bool) -> None:
    assert device_choices(device) == choices
    assert targets_gpu(device) is gpu


@pytest.mark.parametrize(
    ("weight_format", "low"),
    [
        ("int4", True),
        ("INT4", True),
        ("int4_asym", True),
        ("int4_sym", True),
        ("nf4", True),
        ("mxfp4", True),
        ("q4_0", True),
        ("q4_1", True),
        ("q4_k_m", True),
        ("iq4_xs", True),
        ("q3_k_s", True),
        ("q2_k", True),
        ("int8", False),
        ("int8_asym", False),
        ("fp16", False),
        ("q8_0", False),
        ("q6_k", False),
        ("q5_k_m", False),
        ("gguf", False),
        ("unknown", False),
    ],
)
def test_low_bit_formats(weight_format: str, low: bool) -> None:
    assert is_low_bit(weight_format) is low


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "q4_1"),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "q4_k_m"),
        ("Llama-3.2-1B-Instruct-Q8_0.gguf", "q8_0"),
        ("phi-3-mini-4k-instruct-fp16.gguf", None),
        ("model.F16.gguf", "f16"),
        ("model.gguf", None),
        ("benny-clean", None),
    ],
)
def test_gguf_tag_in_file_name(name: str, tag: str | None) -> None:
    assert gguf_weight_format(Path("/models") / name) == tag


def entry(weight_format: str, device: str | None = None) -> ModelEntry:
    return ModelEntry(path="m", weight_format=weight_format, device=device)


@pytest.mark.parametrize(
    ("env", "model", "device", "reason"),
    [
        # The Mac mini: int8 on the iGPU, int4 kept off it.
        ({"device": "GPU"}, entry("int8"), "GPU", "OV_DEVICE"),
        ({"device": "GPU"}, entry("fp16"), "GPU", "OV_DEVICE"),
        ({"device": "GPU"}, entry("int4"), "CPU", "int4 runs on OV_INT4_DEVICE=CPU"),
        ({"device": "GPU.0"}, entry("q4_1"), "CPU", "int4 runs on OV_INT4_DEVICE=CPU"),
        ({"device": "AUTO:GPU,CPU"}, entry("int4"), "CPU", "OV_INT4_DEVICE=CPU"),
        ({"device": "AUTO"}, entry("int4"), "CPU", "OV_INT4_DEVICE=CPU"),
        # No GPU in play: the rule has nothing to protect.
        ({"device": "CPU"}, entry("int4"), "CPU", "OV_DEVICE"),
        ({"device": "AUTO:CPU"}, entry("int4"), "AUTO:CPU", "OV_DEVICE"),
        # The setting moves int4 elsewhere, or (empty) turns the rule off.
        ({"device": "GPU", "int4_device": "GPU"}, entry("int4"), "GPU", "OV_INT4_DEVICE=GPU"),
        ({"device": "GPU.1", "int4_device": "NPU"}, entry("int4"), "NPU", "OV_INT4_DEVICE=NPU"),
        ({"device": "GPU", "int4_device": ""}, entry("int4"), "GPU", "OV_DEVICE"),
        ({"device": "GPU", "int4_device": None}, entry("int4"), "GPU", "OV_DEVICE"),
        # The entry's own device wins over both.
        ({"device": "GPU"}, entry("int4", "GPU"), "GPU", "set by its registry entry"),
        ({"device": "GPU"}, entry("int8", "CPU"), "CPU", "set by its registry entry"),
        ({"device": "CPU"}, entry("int8", "GPU.1"), "GPU.1", "set by its registry entry"),
        # The fallback model: its GGUF file name says what it is.
        ({"device": "GPU", "model_path": "/m/SmolLM2.Q4_1.gguf"}, None, "CPU", "OV_INT4_DEVICE"),
        ({"device": "GPU", "model_path": "/m/SmolLM2.Q8_0.gguf"}, None, "GPU", "OV_DEVICE"),
        ({"device": "GPU", "model_path": "/m/ir-folder"}, None, "GPU", "OV_DEVICE"),
        ({"device": "GPU"}, None, "GPU", "OV_DEVICE"),
    ],
)
def test_choose_device(
    env: dict[str, object], model: ModelEntry | None, device: str, reason: str
) -> None:
    placement = choose_device(model, settings(**env))
    assert placement.device == device
    assert reason in placement.reason


def test_benny_clean_int8_stays_on_the_gpu_and_its_int4_goes_to_the_cpu() -> None:
    registry = parse_registry(
        json.dumps(
            {
                "version": 1,
                "models": {
                    f"benny-clean-{fmt}": {
                        "path": f"benny-clean/task-text-generation-with-past__wf-{fmt}",
                        "task": "text-generation-with-past",
                        "weight_format": fmt,
                    }
                    for fmt in ("int8", "fp16", "int4")
                },
            }
        ),
        Path("registry.json"),
    )
    mac_mini = settings(device="GPU", fallback_device="CPU")
    placed = {name: choose_device(e, mac_mini).device for name, e in registry.models.items()}
    assert placed == {
        "benny-clean-int8": "GPU",
        "benny-clean-fp16": "GPU",
        "benny-clean-int4": "CPU",
    }


def test_registry_device_is_an_extension_of_version_1() -> None:
    text = json.dumps(
        {
            "version": 1,
            "models": {
                "m": {"path": "m", "weight_format": "int4", "device": "GPU", "future": [1, 2]}
            },
            "written_by": "a newer tool",
        }
    )
    data = parse_registry(text, Path("registry.json"))
    assert data.models["m"].device == "GPU"
    # Fields this reader does not know survive a rewrite instead of failing the read.
    dumped = data.model_dump(mode="json", exclude_none=True)
    assert dumped["models"]["m"]["future"] == [1, 2]
    assert dumped["written_by"] == "a newer tool"
    assert "device" not in parse_registry(
        json.dumps({"version": 1, "models": {"m": {"path": "m"}}}), Path("r.json")
    ).models["m"].model_dump(exclude_none=True)


def test_int4_device_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OV_INT4_DEVICE", raising=False)
    assert Settings().int4_device == "CPU"
    monkeypatch.setenv("OV_INT4_DEVICE", "")
    assert Settings().int4_device is None
    monkeypatch.setenv("OV_INT4_DEVICE", "GPU")
    assert Settings().int4_device == "GPU"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"device": "GPU"}, "runs int4 models on OV_INT4_DEVICE=CPU"),
        ({"device": "GPU", "int4_device": "GPU"}, "runs it on the GPU: expect wrong output"),
        ({"device": "CPU"}, None),
    ],
)
def test_int4_warning_text(env: dict[str, object], says: str | None) -> None:
    warning = int4_warning(settings(**env))
    if says is None:
        assert warning is None
    else:
        assert warning is not None and says in warning


def _convert_dry_run(tmp_path: Path, weight_formats: str, **env: str) -> str:
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text("{}", encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OV_")}
    result = subprocess.run(
        [sys.executable, "-m", "ov_llm_server.convert", "tiny", "--dry-run"]
        + ["--weight-format", weight_formats, "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
        check=True,
    )
    assert "register tiny-" in result.stdout
    return result.stderr


def test_converter_warns_when_writing_int4_for_a_gpu_host(tmp_path: Path) -> None:
    stderr = _convert_dry_run(tmp_path, "int8,int4", OV_DEVICE="GPU")
    assert "ov-convert-model: warning: int4 is unstable on this iGPU stack" in stderr


@pytest.mark.parametrize(("formats", "device"), [("int8", "GPU"), ("int4", "CPU")])
def test_converter_is_quiet_otherwise(tmp_path: Path, formats: str, device: str) -> None:
    assert "warning" not in _convert_dry_run(tmp_path, formats, OV_DEVICE=device)


@pytest.mark.parametrize(
    ("kind", "device", "entry_precision", "setting", "hint"),
    [
        # auto: encoders in f32 on a CPU (no bf16 ties), everything else the device's default
        ("rerank", "CPU", None, "auto", "f32"),
        ("embedding", "AUTO:CPU", None, "auto", "f32"),
        ("embedding", "GPU", None, "auto", None),
        ("embedding", "AUTO:GPU,CPU", None, "auto", None),
        ("embedding", "AUTO", None, "auto", None),
        ("llm", "CPU", None, "auto", None),
        ("llm", "GPU", None, "auto", None),
        # the setting, then the entry, win over auto
        ("llm", "CPU", None, "f32", "f32"),
        ("rerank", "CPU", None, "bf16", "bf16"),
        ("llm", "GPU", "f32", "f16", "f32"),
        ("rerank", "CPU", "auto", "bf16", "bf16"),
        ("rerank", "CPU", "bf16", "auto", "bf16"),
    ],
)
def test_choose_precision(
    kind: str, device: str, entry_precision: str | None, setting: str, hint: str | None
) -> None:
    entry = ModelEntry(path="/m", inference_precision=entry_precision)
    chosen = choose_precision(kind, device, entry, settings(inference_precision=setting))
    assert chosen == hint


def test_inference_precision_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OV_INFERENCE_PRECISION", "BF16")
    assert Settings().inference_precision == "bf16"
    monkeypatch.setenv("OV_INFERENCE_PRECISION", "")
    assert Settings().inference_precision == "auto"
    monkeypatch.setenv("OV_INFERENCE_PRECISION", "int8")
    with pytest.raises(ValueError, match="inference_precision"):
        Settings()
    with pytest.raises(ValueError, match="inference_precision"):
        ModelEntry(path="/m", inference_precision="fp8")
