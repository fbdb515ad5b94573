"""The benchmark's committed prompt sets load, and the server would accept every request."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import workloads  # noqa: E402

from ov_llm_server.output import plan_output  # noqa: E402
from ov_llm_server.protocol import ChatCompletionRequest  # noqa: E402

EXPECTED = {"chat", "shared_prefix", "copy_edit", "tool_call"}


def test_every_workload_is_there() -> None:
    assert set(workloads.names()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_requests_validate_as_the_server_reads_them(name: str) -> None:
    workload = workloads.load(name)
    assert len(workload.requests) >= 8
    for request in workload.requests:
        body = {"model": "m", "max_tokens": workload.max_tokens, **request.openai_fields()}
        parsed = ChatCompletionRequest.model_validate(body)
        # Forced calls must compile to a grammar on the server, or the workload measures a 400.
        grammar = plan_output(parsed, "<tool_call>", None).grammar
        assert (grammar is not None) == (name == "tool_call")


def test_prompts_differ_from_the_first_token_on_except_the_shared_prefix() -> None:
    for name in EXPECTED - {"shared_prefix"}:
        firsts = [r.messages[0]["content"][:12] for r in workloads.load(name).requests]
        assert len(set(firsts)) > len(firsts) // 2, name
    shared = workloads.load("shared_prefix").requests
    systems = {r.messages[0]["content"] for r in shared}
    assert len(systems) == 1
    assert len(next(iter(systems)).split()) > 1200  # about 2,000 tokens
    assert len({r.messages[-1]["content"] for r in shared}) == len(shared)


def test_salting_separates_runs_but_keeps_the_shared_prefix_shared() -> None:
    base = workloads.load("shared_prefix")
    one, two = base.salted("a"), base.salted("b")
    assert one.requests[0].messages[0] != two.requests[0].messages[0]
    assert len({r.messages[0]["content"] for r in one.requests}) == 1
    assert [r.messages[1:] for r in one.requests] == [r.messages[1:] for r in base.requests]


def test_take_cycles_through_the_set() -> None:
    workload = workloads.load("tool_call")
    taken = workload.take(len(workload.requests) + 2)
    assert taken[-2:] == list(workload.requests[:2])


def test_unknown_workload_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="copy_edit"):
        workloads.load("nope")


@pytest.mark.parametrize("script", ["run.py", "embeddings.py", "llama_server.py", "draft_model.py"])
def test_bench_scripts_start(script: str) -> None:
    # Their imports of each other (report, measure, ...) hold: `--help` loads every module.
    import subprocess

    bench = Path(__file__).resolve().parent.parent / "bench"
    result = subprocess.run(
        [sys.executable, str(bench / script), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
