"""ov-convert-model with real conversions of the tiny model (and SmolLM2's GGUF)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ov_llm_server.convert import workflow
from ov_llm_server.convert.cli import build_parser, main
from ov_llm_server.convert.export import (
    REQUIRED_FILES,
    ConversionError,
    ExportOptions,
    adapt_group_size,
    one_line,
)
from ov_llm_server.convert.workflow import Layout, convert, find_source
from ov_llm_server.registry import RegistryError, read_registry, resolve_model_path
from ov_llm_server.settings import Settings
from tiny_model import DIALOGUES, F32_PROPERTIES, generate_answers

pytestmark = pytest.mark.slow

TASK_DIR = "task-text-generation-with-past__wf-{}"
KEEP_ME = {
    "path": "/srv/elsewhere/keep",
    "task": "text-generation-with-past",
    "weight_format": "fp16",
    "note": "written by hand",
}


# ---------------------------------------------------------------- helpers


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process, with no OV_* settings leaking in from the test run."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OV_")}
    return subprocess.run(
        [sys.executable, "-m", "ov_llm_server.convert", *map(str, args)],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=timeout,
        check=False,
    )


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: "nothing changed" made checkable."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("ov-convert-model:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def layout_at(root: Path) -> Layout:
    return Layout(models_dir=root, registry_path=root / "converted_models" / "registry.json")


def new_root(root: Path, hf_model: Path, *names: str) -> Layout:
    """A models root holding copies of ``hf_model`` under ``names``."""
    for name in names:
        shutil.copytree(hf_model, root / name)
    return layout_at(root)


def seed_registry(layout: Layout) -> bytes:
    layout.registry_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": 1, "models": {"keep-me": KEEP_ME}}, indent=2)
    layout.registry_path.write_text(text, encoding="utf-8")
    return layout.registry_path.read_bytes()


# ---------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("requested", "config", "expected"),
    [
        (128, {"hidden_size": 128, "intermediate_size": 320}, 64),  # the tiny model
        (128, {"hidden_size": 576, "intermediate_size": 1536}, 64),  # SmolLM2-135M
        (128, {"hidden_size": 1536, "intermediate_size": 8960}, 128),  # Qwen2.5-1.5B
        (128, {"hidden_size": 896, "intermediate_size": 4864}, 128),  # Qwen2.5-0.5B
        (64, {"n_embd": 768}, 64),
        (128, {"hidden_size": 40, "intermediate_size": 100}, -1),
        (-1, {"hidden_size": 128}, -1),
        (128, {}, 128),
    ],
)
def test_int4_group_size_adapts_to_the_layer_widths(
    requested: int, config: dict[str, Any], expected: int
) -> None:
    assert adapt_group_size(requested, config) == expected


def test_layout_follows_settings_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("OV_MODELS_DIR", "OV_REGISTRY_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OV_MODELS_DIR", str(tmp_path / "root"))
    layout = Layout.from_settings(Settings())
    assert layout.models_dir == tmp_path / "root"
    assert layout.registry_path == tmp_path / "root" / "converted_models" / "registry.json"
    other = Layout.from_settings(Settings(), models_dir=tmp_path / "other")
    assert other.registry_path == tmp_path / "other" / "converted_models" / "registry.json"
    monkeypatch.setenv("OV_REGISTRY_PATH", str(tmp_path / "reg.json"))
    assert Layout.from_settings(Settings()).registry_path == tmp_path / "reg.json"
    flagged = Layout.from_settings(Settings(), registry_path=tmp_path / "flag.json")
    assert flagged.registry_path == tmp_path / "flag.json"


def test_sources_are_found_fresh_moved_or_gguf(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.json").write_text("{}")
    (tmp_path / "og_models" / "moved").mkdir(parents=True)
    (tmp_path / "og_models" / "moved" / "config.json").write_text("{}")
    (tmp_path / "single.gguf").write_bytes(b"GGUF")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.Q4_0.gguf").write_bytes(b"GGUF")
    (tmp_path / "junk").mkdir()

    assert find_source(layout, "fresh").in_originals is False
    assert find_source(layout, "moved").in_originals is True
    assert find_source(layout, "single").format == "gguf"
    assert find_source(layout, "folder").path.name == "x.Q4_0.gguf"
    assert workflow.discover_sources(layout) == ["folder", "fresh", "single"]
    with pytest.raises(ConversionError, match="neither a Hugging Face"):
        find_source(layout, "junk")
    with pytest.raises(ConversionError, match="no model 'absent'"):
        find_source(layout, "absent")
    with pytest.raises(ConversionError, match="invalid model name"):
        find_source(layout, "../etc")
    shutil.copytree(tmp_path / "fresh", tmp_path / "og_models" / "fresh")
    with pytest.raises(ConversionError, match="both in"):
        find_source(layout, "fresh")


def test_one_line_keeps_the_informative_line() -> None:
    ov_style = RuntimeError("Exception from src/core.cpp:1:\nException from x\nCheck failed: bad\n")
    assert one_line(ov_style) == "Check failed: bad"
    assert one_line(ValueError("first\nsecond")) == "first"
    assert one_line(KeyError()) == "KeyError"


def test_command_line_forms() -> None:
    parsers = build_parser()
    args = parsers["convert"].parse_args(["a", "b", "--weight-format", "int8,fp16"])
    assert args.names == ["a", "b"] and args.weight_format == ["int8", "fp16"]
    assert args.trust_remote_code is False  # only when asked
    assert parsers["convert"].parse_args(["a", "--trust-remote-code"]).trust_remote_code
    assert main(["--weight-format", "int3", "x"]) == 2
    assert main(["--ratio", "1.5", "x"]) == 2
    assert main(["remove"]) == 2


def test_console_script_and_usage_errors(tmp_path: Path) -> None:
    script = shutil.which("ov-convert-model", path=str(Path(sys.executable).parent))
    assert script is not None
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "--weight-format" in helped.stdout
    nothing = run_cli("--models-dir", tmp_path)
    assert nothing.returncode == 2
    assert "name a model to convert, or use --all" in error_line(nothing)
    empty = run_cli("--all", "--models-dir", tmp_path)
    assert empty.returncode == 0
    listed = run_cli("list", "--models-dir", tmp_path)
    assert listed.returncode == 0 and "no models in" in listed.stdout


# ---------------------------------------------------------------- real conversions


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, tiny_hf_model: Path) -> Layout:
    """The tiny model converted in place to int8, fp16 and int4, in that order, in-process."""
    layout = new_root(tmp_path_factory.mktemp("models"), tiny_hf_model, "tiny")
    for weight_format in ("int8", "fp16", "int4"):
        convert(layout, "tiny", ExportOptions(weight_format=weight_format))  # type: ignore[arg-type]
    return layout


def test_every_format_is_registered_complete_and_original_moved(converted: Layout) -> None:
    data = read_registry(converted.registry_path, missing_ok=False)
    assert data.version == 1
    assert sorted(data.models) == ["tiny-fp16", "tiny-int4", "tiny-int8"]
    for weight_format in ("int8", "fp16", "int4"):
        entry = data.models[f"tiny-{weight_format}"]
        path = resolve_model_path(converted.registry_path, entry)
        assert path == converted.converted_dir / "tiny" / TASK_DIR.format(weight_format)
        assert entry.path == f"tiny/{TASK_DIR.format(weight_format)}"  # relative: relocatable
        assert entry.weight_format == weight_format
        assert entry.task == "text-generation-with-past"
        assert entry.model_extra is not None
        assert entry.model_extra["source"] == str(converted.originals_dir / "tiny")
        assert all((path / name).stat().st_size > 0 for name in REQUIRED_FILES)
        # The service reads the tree through its group: no mkdtemp-style 0700 folders.
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~current_umask()
    assert not (converted.models_dir / "tiny").exists()
    assert (converted.originals_dir / "tiny" / "config.json").is_file()
    assert workflow.leftover_temporaries(converted) == []


@pytest.mark.parametrize("weight_format", ["int8", "fp16"])
def test_converted_model_answers_every_dialogue_exactly(
    converted: Layout, weight_format: str
) -> None:
    path = converted.converted_dir / "tiny" / TASK_DIR.format(weight_format)
    answers = generate_answers(path, properties=F32_PROPERTIES)
    assert answers == {name: d["answer"] for name, d in DIALOGUES.items()}


def test_int4_model_loads_and_answers(converted: Layout) -> None:
    path = converted.converted_dir / "tiny" / TASK_DIR.format("int4")
    answers = generate_answers(path, continuous_batching=False)
    exact = [name for name, text in answers.items() if text == DIALOGUES[name]["answer"]]
    # 4-bit weights are lossy by design; the tiny model's margins keep most answers intact.
    assert len(exact) >= 8, answers


def test_conversion_json_records_source_settings_versions_and_time(converted: Layout) -> None:
    folder = converted.converted_dir / "tiny" / TASK_DIR.format("int4")
    record = json.loads((folder / "conversion.json").read_text())
    source = record["source"]
    assert source["name"] == "tiny" and source["format"] == "hf"
    assert source["path"] == str(converted.originals_dir / "tiny")  # found there the 3rd time
    files = {item["path"]: item["size"] for item in source["fingerprint"]["files"]}
    original = converted.originals_dir / "tiny"
    assert files["model.safetensors"] == (original / "model.safetensors").stat().st_size
    assert set(source["fingerprint"]["sha256"]) >= {"config.json", "tokenizer.json"}
    assert all(len(h) == 64 for h in source["fingerprint"]["sha256"].values())
    assert record["task"] == "text-generation-with-past"
    assert record["weight_format"] == "int4"
    assert record["registry_name"] == "tiny-int4"
    quant = record["quantization"]
    assert (quant["bits"], quant["group_size"], quant["requested_group_size"]) == (4, 64, 128)
    assert (quant["ratio"], quant["sym"]) == (1.0, False)
    for package in ("openvino", "optimum-intel", "nncf", "transformers"):
        assert record["versions"][package], package
    assert record["duration_seconds"] > 0
    assert record["started_at"] < record["finished_at"]
    assert record["host"]
    first = json.loads(
        (converted.converted_dir / "tiny" / TASK_DIR.format("int8") / "conversion.json").read_text()
    )
    assert first["source"]["path"] == str(converted.models_dir / "tiny")
    assert first["source"]["moved_to"] == str(converted.originals_dir / "tiny")
    assert first["quantization"] == {"bits": 8, "sym": False, "group_size": -1, "ratio": 1.0}


def test_int4_settings_reach_nncf(converted: Layout, tmp_path: Path) -> None:
    import openvino as ov

    layout = new_root(tmp_path, converted.originals_dir / "tiny", "tiny")
    options = ExportOptions(weight_format="int4", group_size=32, ratio=0.5, sym=True)
    result = convert(layout, "tiny", options)
    quant = result.record["quantization"]
    assert (quant["group_size"], quant["ratio"], quant["sym"]) == (32, 0.5, True)
    model = ov.Core().read_model(result.plan.target / "openvino_model.xml")
    types = {
        op.get_element_type().get_type_name()
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
    }
    assert "i4" in types and "u4" not in types  # symmetric int4 ...
    assert "u8" in types  # ... and half of the layers in the int8 backup precision


def test_cli_list_verify_remove(converted: Layout, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(converted.models_dir, root)
    listed = run_cli("list", "--models-dir", root)
    assert listed.returncode == 0, listed.stderr
    assert "tiny-int8" in listed.stdout and "MISSING" not in listed.stdout
    as_json = json.loads(run_cli("list", "--json", "--models-dir", root).stdout)
    assert sorted(as_json) == ["tiny-fp16", "tiny-int4", "tiny-int8"]

    verified = run_cli("verify", "--models-dir", root)
    assert verified.returncode == 0, verified.stderr
    assert "3 entries ok" in verified.stdout

    removed = run_cli("remove", "tiny-int4", "--delete-files", "--models-dir", root)
    assert removed.returncode == 0, removed.stderr
    assert not (root / "converted_models" / "tiny" / TASK_DIR.format("int4")).exists()
    kept = run_cli("remove", "tiny-fp16", "--models-dir", root)
    assert kept.returncode == 0
    assert (root / "converted_models" / "tiny" / TASK_DIR.format("fp16")).is_dir()
    registry = root / "converted_models" / "registry.json"
    assert sorted(read_registry(registry).models) == ["tiny-int8"]

    # Files outside converted_models are never deleted; the entry then stays as well.
    data = json.loads(registry.read_text())
    data["models"]["keep-me"] = KEEP_ME
    registry.write_text(json.dumps(data))
    outside = run_cli("remove", "keep-me", "--delete-files", "--models-dir", root)
    assert outside.returncode == 1
    assert "will not delete /srv/elsewhere/keep" in error_line(outside)
    assert "keep-me" in read_registry(registry).models
    assert run_cli("remove", "keep-me", "--models-dir", root).returncode == 0
    unknown = run_cli("remove", "nope", "--models-dir", root)
    assert unknown.returncode == 1
    assert "'nope' is not in the registry" in error_line(unknown)

    (root / "converted_models" / "tiny" / TASK_DIR.format("int8") / "openvino_model.bin").unlink()
    broken = run_cli("verify", "--no-load", "--models-dir", root)
    assert broken.returncode == 1
    assert "missing or empty: openvino_model.bin" in broken.stdout
    fp16_dir = root / "converted_models" / "tiny" / TASK_DIR.format("fp16")
    assert f"note  converted but not in the registry: {fp16_dir}" in broken.stdout
    assert error_line(broken).endswith("1 of 1 entries failed: tiny-int8")


def test_dry_run_changes_nothing(tmp_path: Path, tiny_hf_model: Path) -> None:
    layout = new_root(tmp_path, tiny_hf_model, "tiny")
    before = snapshot(tmp_path)
    result = run_cli("tiny/", "--weight-format", "int8,fp16", "--dry-run", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "register tiny-int8" in result.stdout and "register tiny-fp16" in result.stdout
    assert f"move the original to {layout.originals_dir / 'tiny'}" in result.stdout
    assert snapshot(tmp_path) == before
    assert not layout.converted_dir.exists()


def test_all_converts_hf_and_gguf_sources(
    tmp_path: Path, tiny_hf_model: Path, smollm2_gguf: Path
) -> None:
    layout = new_root(tmp_path, tiny_hf_model, "tiny")
    # A link, not a 93 MB copy: moving it to og_models moves the link.
    (tmp_path / "smol.gguf").symlink_to(smollm2_gguf)
    result = run_cli("--all", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    models = read_registry(layout.registry_path).models
    assert sorted(models) == ["smol-gguf", "tiny-int8"]
    assert models["smol-gguf"].weight_format == "gguf"
    assert (layout.originals_dir / "smol.gguf").exists()
    assert not (tmp_path / "smol.gguf").exists()

    import openvino_genai as og

    path = resolve_model_path(layout.registry_path, models["smol-gguf"])
    record = json.loads((path / "conversion.json").read_text())
    assert record["source"]["format"] == "gguf"
    pipe = og.LLMPipeline(str(path), "CPU")
    config = og.GenerationConfig()
    config.max_new_tokens = 20
    history = og.ChatHistory([{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in pipe.generate(history, config).texts[0]


# ---------------------------------------------------------------- converters at once


def test_parallel_converters_lose_no_entry(tmp_path: Path, tiny_hf_model: Path) -> None:
    # The whole workflow side by side: scratch folders, originals moved, entries added.
    # The registry lock itself is stressed harder, and faster, without conversions:
    # tests/test_registry.py::test_eight_writer_processes_lose_no_entry.
    names = [f"m{i}" for i in range(3)]
    layout = new_root(tmp_path / "models", tiny_hf_model, *names)
    seed_registry(layout)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OV_")}
    # Several processes on two cores: one thread each instead of oversubscribed.
    clean.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    argv = [sys.executable, "-m", "ov_llm_server.convert", "--weight-format", "fp16", "-q"]
    logs = {name: tmp_path / f"{name}.log" for name in names}
    procs = {
        name: subprocess.Popen(
            [*argv, "--models-dir", str(layout.models_dir), name],
            stdout=logs[name].open("w"),
            stderr=subprocess.STDOUT,
            env=clean,
        )
        for name in names
    }
    # Meanwhile a reader, like the service, must never see a partial or invalid registry.
    reads, bad_reads = 0, []
    while any(p.poll() is None for p in procs.values()):
        try:
            read_registry(layout.registry_path, missing_ok=False)
            reads += 1
        except RegistryError as exc:
            bad_reads.append(str(exc))
        time.sleep(0.01)
    for name, proc in procs.items():
        assert proc.wait() == 0, f"{name}: {logs[name].read_text()[-2000:]}"
    assert bad_reads == [] and reads > 0

    data = read_registry(layout.registry_path, missing_ok=False)
    assert sorted(data.models) == sorted([*(f"{n}-fp16" for n in names), "keep-me"])
    assert data.models["keep-me"].model_dump(exclude_none=True) == KEEP_ME
    for name in names:
        path = resolve_model_path(layout.registry_path, data.models[f"{name}-fp16"])
        assert all((path / f).is_file() for f in REQUIRED_FILES), name
        assert (layout.originals_dir / name).is_dir()
    assert workflow.leftover_temporaries(layout) == []
    assert not list(layout.registry_path.parent.glob(".registry.json.*"))


# ---------------------------------------------------------------- failures change nothing


@pytest.fixture()
def fresh(tmp_path: Path, tiny_hf_model: Path) -> Layout:
    layout = new_root(tmp_path, tiny_hf_model, "tiny")
    seed_registry(layout)
    return layout


def assert_untouched(layout: Layout, before: dict[str, tuple[int, int]]) -> None:
    assert snapshot(layout.models_dir) == before
    assert (layout.models_dir / "tiny" / "config.json").is_file()
    assert not layout.originals_dir.exists()
    assert not (layout.converted_dir / "tiny").exists()


def test_unknown_model_fails_cleanly(fresh: Layout) -> None:
    before = snapshot(fresh.models_dir)
    result = run_cli("absent", "--models-dir", fresh.models_dir)
    assert result.returncode == 1
    assert "no model 'absent'" in error_line(result)
    assert_untouched(fresh, before)


def test_corrupt_registry_is_refused_before_converting(fresh: Layout) -> None:
    fresh.registry_path.write_text('{"version": 1, "models": {', encoding="utf-8")
    before = snapshot(fresh.models_dir)
    result = run_cli("tiny", "--models-dir", fresh.models_dir)
    assert result.returncode == 1
    assert "registry unusable, nothing converted" in error_line(result)
    assert "not valid JSON" in error_line(result)
    assert_untouched(fresh, before)


def test_broken_weights_fail_cleanly(fresh: Layout) -> None:
    weights = fresh.models_dir / "tiny" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])  # an interrupted download
    before = snapshot(fresh.models_dir)
    result = run_cli("tiny", "--models-dir", fresh.models_dir)
    assert result.returncode == 1
    assert error_line(result).startswith("ov-convert-model: error: tiny (int8): optimum-intel")
    assert "Traceback" not in result.stderr
    assert_untouched(fresh, before)


def test_missing_convert_extra_is_one_clear_line(fresh: Layout, tmp_path: Path) -> None:
    fake = tmp_path / "fake-site" / "optimum"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'optimum.intel'\")\n")
    before = snapshot(fresh.models_dir)
    result = run_cli("tiny", "--models-dir", fresh.models_dir, env={"PYTHONPATH": str(fake.parent)})
    assert result.returncode == 1
    assert "pip install 'ov-llm-server[convert]'" in error_line(result)
    assert_untouched(fresh, before)


def test_existing_conversion_needs_force(converted: Layout, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(converted.models_dir, root)
    before = snapshot(root)
    result = run_cli("tiny", "--weight-format", "fp16", "--models-dir", root)
    assert result.returncode == 1
    assert "exists already (use --force" in error_line(result)
    assert snapshot(root) == before


def _fake_export(partial: bool, error: BaseException) -> Callable[..., dict[str, Any]]:
    def export(src: Path, out: Path, options: ExportOptions) -> dict[str, Any]:
        for name in REQUIRED_FILES if not partial else REQUIRED_FILES[:1]:
            (out / name).write_text("x")
        if partial:
            raise error
        return {"bits": 8}

    return export


@pytest.mark.parametrize(
    "error", [ConversionError("nncf ran out of memory"), KeyboardInterrupt()], ids=repr
)
def test_failure_midway_leaves_no_partial_output(
    fresh: Layout, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    monkeypatch.setattr(workflow, "export_model", _fake_export(True, error))
    before = snapshot(fresh.models_dir)
    with pytest.raises(type(error)):
        convert(fresh, "tiny", ExportOptions())
    assert_untouched(fresh, before)
    assert workflow.leftover_temporaries(fresh) == []


def test_registry_failure_undoes_the_conversion(
    fresh: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflow, "export_model", _fake_export(False, ConversionError("-")))

    def refuse(path: Path, mutate: Any) -> None:
        raise RegistryError(f"{path}: disk full")

    monkeypatch.setattr(workflow, "update_registry", refuse)
    before = snapshot(fresh.models_dir)
    with pytest.raises(ConversionError, match="registry not updated, conversion undone"):
        convert(fresh, "tiny", ExportOptions())
    assert_untouched(fresh, before)


def test_forced_reconversion_restores_the_old_one_on_failure(
    fresh: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflow, "export_model", _fake_export(False, ConversionError("-")))
    convert(fresh, "tiny", ExportOptions())
    target = fresh.converted_dir / "tiny" / TASK_DIR.format("int8")
    old_record = (target / "conversion.json").read_text()
    registry_before = fresh.registry_path.read_bytes()

    def refuse(path: Path, mutate: Any) -> None:
        raise RegistryError("locked out")

    monkeypatch.setattr(workflow, "update_registry", refuse)
    with pytest.raises(ConversionError):
        convert(fresh, "tiny", ExportOptions(), force=True)
    assert (target / "conversion.json").read_text() == old_record
    assert fresh.registry_path.read_bytes() == registry_before
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_gguf_folder_moves_as_a_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_gguf(gguf_file: Path, out: Path) -> dict[str, Any]:
        for name in REQUIRED_FILES:
            (out / name).write_text("x")
        return {"source_format": "gguf"}

    monkeypatch.setattr(workflow, "export_gguf", fake_gguf)
    layout = layout_at(tmp_path)
    (tmp_path / "smol").mkdir()
    (tmp_path / "smol" / "smol.Q4_1.gguf").write_bytes(b"GGUF")
    (tmp_path / "smol" / "README.md").write_text("model card")
    result = convert(layout, "smol", ExportOptions(weight_format="fp16"))
    assert result.plan.registry_name == "smol-gguf"
    assert result.plan.target.name == TASK_DIR.format("gguf")
    assert (layout.originals_dir / "smol" / "README.md").is_file()
    assert not (tmp_path / "smol").exists()
    entry = read_registry(layout.registry_path).models["smol-gguf"]
    assert entry.weight_format == "gguf"


def test_original_that_cannot_move_stays_and_the_model_is_served(
    fresh: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflow, "export_model", _fake_export(False, ConversionError("-")))

    def refuse(src: Path, dst: Path) -> None:
        raise PermissionError(f"[Errno 13] Permission denied: '{dst}'")

    monkeypatch.setattr(workflow, "_move", refuse)
    result = convert(fresh, "tiny", ExportOptions())
    assert result.warnings == [
        "converted, but the original stays in place: "
        f"[Errno 13] Permission denied: '{fresh.originals_dir / 'tiny'}'"
    ]
    assert "tiny-int8" in read_registry(fresh.registry_path).models
    assert (fresh.models_dir / "tiny" / "config.json").is_file()


# ---------------------------------------------------------------- end to end with the service


def test_model_converted_while_the_service_runs_is_served(
    server_factory: Any, tmp_path: Path, tiny_hf_model: Path
) -> None:
    layout = new_root(tmp_path, tiny_hf_model, "fresh-tiny")
    server = server_factory(None, OV_REGISTRY_PATH=str(layout.registry_path))
    ids = [m["id"] for m in httpx.get(f"{server.v1}/models", timeout=10).json()["data"]]
    assert "fresh-tiny-int8" not in ids

    result = run_cli("fresh-tiny", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    deadline = time.monotonic() + 30
    while "fresh-tiny-int8" not in ids:
        assert time.monotonic() < deadline, f"not listed: {ids}"
        time.sleep(0.2)
        ids = [m["id"] for m in httpx.get(f"{server.v1}/models", timeout=10).json()["data"]]
    dialogue = DIALOGUES["D_CAPITAL"]
    reply = httpx.post(
        f"{server.v1}/chat/completions",
        json={"model": "fresh-tiny-int8", "messages": dialogue["messages"], "max_tokens": 50},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == dialogue["answer"]


# ---------------------------------------------------------------- embedding and rerank models


def test_encoder_tasks_are_detected_and_task_overrides(
    tmp_path: Path, tiny_encoders: dict[str, Path]
) -> None:
    for name in ("embedder-mean", "reranker"):
        shutil.copytree(tiny_encoders[f"{name}/hf"], tmp_path / name)
    shutil.copytree(tiny_encoders["embedder-mean/hf"], tmp_path / "other")
    result = run_cli("embedder-mean", "reranker", "--dry-run", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    converted = tmp_path / "converted_models"
    assert f"{converted}/embedder-mean/task-feature-extraction__wf-int8" in result.stdout
    assert f"{converted}/reranker/task-text-classification__wf-int8" in result.stdout
    assert result.stdout.count("  task feature-extraction") == 1
    forced = run_cli(
        "reranker", "--task", "feature-extraction", "--dry-run", "--models-dir", tmp_path
    )
    assert "  task feature-extraction" in forced.stdout, forced.stderr


def test_pooling_the_pipeline_cannot_run_fails_before_exporting(
    tmp_path: Path, tiny_encoders: dict[str, Path]
) -> None:
    shutil.copytree(tiny_encoders["embedder-mean/hf"], tmp_path / "maxpool")
    (tmp_path / "maxpool" / "1_Pooling" / "config.json").write_text('{"pooling_mode": "max"}')
    before = snapshot(tmp_path)
    result = run_cli("maxpool", "--models-dir", tmp_path)
    assert result.returncode == 1
    assert "pooling mode 'max' is not supported by openvino_genai" in error_line(result)
    assert "exporting" not in result.stderr  # refused before optimum ran
    assert snapshot(tmp_path) == before


def test_encoders_convert_register_record_and_verify(
    tmp_path: Path, tiny_encoders: dict[str, Path]
) -> None:
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (the tokenizer ops read_model needs)
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    for name in ("embedder-cls", "reranker"):
        shutil.copytree(tiny_encoders[f"{name}/hf"], tmp_path / name)
    result = run_cli("--all", "--weight-format", "fp16", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    registry = tmp_path / "converted_models" / "registry.json"
    models = read_registry(registry).models
    assert {n: e.task for n, e in models.items()} == {
        "embedder-cls-fp16": "feature-extraction",
        "reranker-fp16": "text-classification",
    }
    embedder = resolve_model_path(registry, models["embedder-cls-fp16"])
    reranker = resolve_model_path(registry, models["reranker-fp16"])
    assert embedder.name == "task-feature-extraction__wf-fp16"
    embedder_record = json.loads((embedder / "conversion.json").read_text())
    assert embedder_record["encoder"] == {
        "pooling": "cls",
        "normalize": False,
        "max_length": 48,
        "dimension": 64,
        "prompts": {},
        "default_prompt_name": None,
        "matryoshka_dimensions": None,
        "source": "sentence-transformers",
    }
    assert "1_Pooling/config.json" in embedder_record["source"]["fingerprint"]["sha256"]
    reranker_record = json.loads((reranker / "conversion.json").read_text())
    assert reranker_record["encoder"] == {
        "max_length": 48,
        "num_labels": 1,
        "activation": "sigmoid",
        "token_type_ids": True,
    }
    tokenizer = ov.Core().read_model(reranker / "openvino_tokenizer.xml")
    assert len(tokenizer.inputs) == 2  # (query, document) pairs
    outputs = {name for port in tokenizer.outputs for name in port.get_names()}
    assert "token_type_ids" in outputs

    verified = run_cli("verify", "--models-dir", tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "2 entries ok" in verified.stdout

    # A tokenizer as optimum writes it for a tokenizer that does not list token_type_ids.
    hf_tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoders["reranker/hf"]))
    hf_tokenizer.model_input_names = ["input_ids", "attention_mask"]
    ov.save_model(convert_tokenizer(hf_tokenizer), reranker / "openvino_tokenizer.xml")
    broken = run_cli("verify", "--no-load", "--models-dir", tmp_path)
    assert broken.returncode == 1
    assert "the tokenizer does not produce token_type_ids" in broken.stdout
