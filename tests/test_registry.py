"""The registry module: parsing, live reload, atomic locked updates (pure logic, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ov_llm_server.registry import (
    ModelEntry,
    RegistryData,
    RegistryError,
    RegistryWatcher,
    parse_registry,
    read_registry,
    resolve_model_path,
    update_registry,
)

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40)
entries = st.builds(
    ModelEntry,
    path=st.text(min_size=1, max_size=60),
    task=st.sampled_from(["text-generation-with-past", "text-generation"]),
    weight_format=st.sampled_from(["int8", "fp16", "int4", "q4_1"]),
)


def test_spec_format_is_read(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "models": {
                    "benny-clean-int8": {
                        "path": "benny-clean/task-text-generation-with-past__wf-int8",
                        "task": "text-generation-with-past",
                        "weight_format": "int8",
                    }
                },
            }
        ),
        encoding="utf-8",
    )
    data = read_registry(path)
    entry = data.models["benny-clean-int8"]
    assert entry.weight_format == "int8"
    assert resolve_model_path(path, entry) == (
        tmp_path / "benny-clean" / "task-text-generation-with-past__wf-int8"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"models": {}}', "unsupported registry version None"),
        ('{"version": 2, "models": {}}', "unsupported registry version 2"),
        ('{"version": 1, "models": {"a": {}}}', "invalid entry at models.a.path"),
        ('{"version": 1, "models": {"a": {"path": ""}}}', "invalid entry at models.a.path"),
        ('{"version": 1, "models": []}', "invalid entry at models"),
        (
            '{"version": 1, "models": {"a": {"path": "x", "voices": {"a b": "v.bin"}}}}',
            r"invalid entry at models\.a\.voices\.a b",
        ),
        (
            '{"version": 1, "models": {"a": {"path": "x", "voices": {"v": ""}}}}',
            r"invalid entry at models\.a\.voices\.v",
        ),
    ],
)
def test_bad_files_give_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "registry.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RegistryError, match=message) as info:
        read_registry(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_either_parse_or_raise_registry_error(blob: bytes) -> None:
    text = blob.decode("utf-8", errors="replace")
    try:
        data = parse_registry(text, Path("fuzz.json"))
    except RegistryError:
        return
    assert data.version == 1


@settings(max_examples=100)
@given(st.dictionaries(names, entries, max_size=8))
def test_update_round_trips_any_entries(models: dict[str, ModelEntry]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub" / "registry.json"
        update_registry(path, lambda data: data.models.update(models))
        assert read_registry(path).models == models
        assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


# Each writer process adds its own entries one update at a time, as converters do.
_WRITER = """
import sys
from pathlib import Path
from ov_llm_server.registry import ModelEntry, update_registry

path, writer, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    name = f"{writer}-{i}"
    update_registry(path, lambda data: data.models.__setitem__(name, ModelEntry(path=name)))
"""


def test_eight_writer_processes_lose_no_entry(tmp_path: Path) -> None:
    """The lock under contention: 8 processes x 25 read-modify-writes, a reader meanwhile."""
    path = tmp_path / "registry.json"
    update_registry(path, lambda d: d.models.__setitem__("keep-me", ModelEntry(path="/k")))
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), f"w{w}", "25"])
        for w in range(8)
    ]
    reads, bad = 0, []
    while any(w.poll() is None for w in writers):
        try:
            read_registry(path, missing_ok=False)
            reads += 1
        except RegistryError as exc:
            bad.append(str(exc))
        time.sleep(0.002)
    assert [w.wait() for w in writers] == [0] * 8
    assert bad == [] and reads > 0
    expected = {"keep-me", *(f"w{w}-{i}" for w in range(8) for i in range(25))}
    assert set(read_registry(path).models) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_update_keeps_other_entries_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "owner": "someone",
                "models": {"a": {"path": "/a", "weight_format": "int8", "note": "keep me"}},
            }
        ),
        encoding="utf-8",
    )
    update_registry(path, lambda d: d.models.__setitem__("b", ModelEntry(path="/b")))
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["owner"] == "someone"
    assert raw["models"]["a"]["note"] == "keep me"
    assert set(raw["models"]) == {"a", "b"}


def test_update_refuses_to_overwrite_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text("{broken", encoding="utf-8")
    with pytest.raises(RegistryError):
        update_registry(path, lambda d: d.models.__setitem__("b", ModelEntry(path="/b")))
    assert path.read_text(encoding="utf-8") == "{broken"


def test_failed_mutation_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    update_registry(path, lambda d: d.models.__setitem__("a", ModelEntry(path="/a")))
    before = path.read_bytes()

    def explode(data: RegistryData) -> None:
        data.models.clear()
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        update_registry(path, explode)
    assert path.read_bytes() == before


def test_watcher_reloads_on_change_and_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    watcher = RegistryWatcher(path)
    assert watcher.snapshot().error is not None  # missing file
    update_registry(path, lambda d: d.models.__setitem__("a", ModelEntry(path="/a")))
    assert set(watcher.entries()) == {"a"}
    update_registry(path, lambda d: d.models.__setitem__("b", ModelEntry(path="/b")))
    assert set(watcher.entries()) == {"a", "b"}
    path.write_text("{not json", encoding="utf-8")
    snapshot = watcher.snapshot()
    assert set(snapshot.data.models) == {"a", "b"}
    assert snapshot.error is not None and "not valid JSON" in snapshot.error
    os.unlink(path)
    assert set(watcher.entries()) == {"a", "b"}
    assert "not found" in (watcher.snapshot().error or "")
