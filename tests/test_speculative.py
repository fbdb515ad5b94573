"""Speculative decoding (prompt lookup, a draft model): registry field, exactness, combinations,
metrics and the fallback when a draft cannot be used.

Real inference throughout, except the unit tests of pure logic at the top: greedy output with
speculation is compared token for token with plain greedy output on every model the tests use
(the tiny model in every format, SmolLM2), in-process on the pipeline the engine builds; then
through a live server whose registry asks for speculation, with grammars, stop strings, seeds,
a client that leaves mid-stream, and drafts that are missing or broken for real.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openvino_genai as og
import pytest

from live_server import LiveServer
from ov_llm_server.engine.core.pipelines import build_pipeline
from ov_llm_server.engine.core.sampling import generation_config, model_defaults
from ov_llm_server.engine.core.speculation import (
    DraftCounter,
    kv_cache_precision,
    prefix_caching,
    request_fields,
)
from ov_llm_server.engine.messages import EngineConfig, SamplingParams, Speculation
from ov_llm_server.registry import (
    DraftModel,
    ModelEntry,
    PromptLookup,
    RegistryError,
    parse_registry,
    read_registry,
    update_registry,
)
from ov_llm_server.speculative import resolve_speculation
from tiny_model import DIALOGUES, TOOLS

PROMPT_LOOKUP = Speculation("prompt_lookup", 5, max_ngram_size=3)

# ---------------------------------------------------------------- registry field (pure logic)


def _entry(speculative: Any) -> ModelEntry:
    return ModelEntry.model_validate({"path": "m", "speculative": speculative})


def test_the_issues_shapes_are_read_with_defaults_where_left_out() -> None:
    lookup = _entry({"method": "prompt_lookup"}).speculative
    assert lookup == PromptLookup(method="prompt_lookup", num_assistant_tokens=5, max_ngram_size=3)
    draft = _entry(
        {"method": "draft", "draft_model": "qwen-0.5b-int8", "draft_device": "CPU"}
    ).speculative
    assert isinstance(draft, DraftModel)
    assert (draft.draft_model, draft.draft_device, draft.num_assistant_tokens) == (
        "qwen-0.5b-int8",
        "CPU",
        5,
    )
    assert _entry({"method": "draft", "draft_model": "d"}).speculative.draft_device is None  # type: ignore[union-attr]
    assert ModelEntry(path="m").speculative is None


@pytest.mark.parametrize(
    ("speculative", "message"),
    [
        ({"method": "eagle3"}, "does not match any of the expected tags"),
        ({"num_assistant_tokens": 5}, "Unable to extract tag using discriminator 'method'"),
        ({"method": "draft"}, "models.m.speculative.draft.draft_model: Field required"),
        ({"method": "prompt_lookup", "num_assistant_tokens": 0}, "greater than or equal to 1"),
        ({"method": "prompt_lookup", "max_ngram_size": 99}, "less than or equal to 32"),
        ({"method": "draft", "draft_model": ""}, "at least 1 character"),
        ("prompt_lookup", "models.m.speculative"),
    ],
)
def test_invalid_speculative_fields_are_refused_naming_the_entry(
    tmp_path: Path, speculative: Any, message: str
) -> None:
    text = json.dumps({"version": 1, "models": {"m": {"path": "m", "speculative": speculative}}})
    with pytest.raises(RegistryError, match="models.m.speculative") as raised:
        parse_registry(text, tmp_path / "registry.json")
    assert message in str(raised.value)


def test_fields_a_reader_does_not_know_survive_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    speculative = {"method": "prompt_lookup", "max_ngram_size": 2, "future_knob": [1, 2]}
    path.write_text(
        json.dumps({"version": 1, "models": {"m": {"path": "m", "speculative": speculative}}}),
        encoding="utf-8",
    )
    update_registry(path, lambda data: data.models.update(n=ModelEntry(path="n")))
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["version"] == 1
    assert written["models"]["m"]["speculative"] == {
        "method": "prompt_lookup",
        "num_assistant_tokens": 5,
        "max_ngram_size": 2,
        "future_knob": [1, 2],
    }
    assert read_registry(path).models["m"].speculative == _entry(speculative).speculative


def test_a_draft_resolves_to_its_registry_entrys_path(tmp_path: Path) -> None:
    (tmp_path / "drafts" / "small").mkdir(parents=True)
    (tmp_path / "drafts" / "small.gguf").write_bytes(b"GGUF")
    entries = {
        "small": ModelEntry(path="drafts/small"),
        "small-gguf": ModelEntry(path="drafts/small.gguf"),
        "gone": ModelEntry(path="drafts/gone"),
    }
    registry = tmp_path / "registry.json"

    def resolve(speculative: dict[str, Any]) -> tuple[Speculation | None, str | None]:
        return resolve_speculation(_entry(speculative), entries, registry)

    draft = {"method": "draft", "num_assistant_tokens": 3}
    assert resolve({**draft, "draft_model": "small", "draft_device": "CPU"}) == (
        Speculation("draft", 3, draft_path=str(tmp_path / "drafts" / "small"), draft_device="CPU"),
        None,
    )
    assert resolve({"method": "prompt_lookup"}) == (PROMPT_LOOKUP, None)
    assert resolve_speculation(None, entries, registry) == (None, None)
    for name, why in (
        ("nope", "'nope' is not in the registry"),
        ("gone", f"has no files at {tmp_path / 'drafts' / 'gone'}"),
        ("small-gguf", "is a GGUF file"),
    ):
        speculation, warning = resolve({**draft, "draft_model": name})
        assert speculation is None
        assert warning is not None and warning.startswith("speculative decoding (draft) off: ")
        assert why in warning


def test_speculative_engines_on_cpu_get_a_16_bit_kv_cache_unless_configured() -> None:
    assert kv_cache_precision(EngineConfig("CPU", speculative=PROMPT_LOOKUP)) == "f16"
    assert kv_cache_precision(EngineConfig("CPU")) is None
    assert kv_cache_precision(EngineConfig("GPU", speculative=PROMPT_LOOKUP)) is None
    configured = EngineConfig("CPU", kv_cache_precision="u8", speculative=PROMPT_LOOKUP)
    assert kv_cache_precision(configured) == "u8"


def test_prefix_caching_is_off_beside_a_draft_model_only() -> None:
    # GenAI breaks a draft engine's step when prefix caching is on and sampled draft tokens
    # are rejected (test_a_seed_gives_the_same_sample_with_speculation samples at temperature 2).
    assert prefix_caching(EngineConfig("CPU"))
    assert prefix_caching(EngineConfig("CPU", speculative=PROMPT_LOOKUP))
    assert not prefix_caching(
        EngineConfig("CPU", speculative=Speculation("draft", 5, draft_path="d"))
    )


def test_every_request_of_a_speculative_engine_gets_the_assistant_fields() -> None:
    assert request_fields(None) == {}
    assert request_fields(PROMPT_LOOKUP) == {"num_assistant_tokens": 5, "max_ngram_size": 3}
    assert request_fields(Speculation("draft", 4, draft_path="d")) == {"num_assistant_tokens": 4}


def test_draft_counting() -> None:
    counter = DraftCounter(Speculation("draft", 5, draft_path="d"))
    counter.count(before=0, got=1, budget=20)  # the prefill's token: nothing proposed
    counter.count(before=1, got=6, budget=20)  # all 5 accepted
    counter.count(before=7, got=2, budget=20)  # 1 of 5
    counter.count(before=9, got=0, budget=20)  # not scheduled in this step
    counter.count(before=9, got=1, budget=11)  # room for 1 more after the model's own: 1 of 1
    assert counter.take() == (5 + 5 + 1, 5 + 1 + 0)
    assert counter.take() == (0, 0)
    plain = DraftCounter(None)
    plain.count(before=3, got=1, budget=20)
    assert plain.take() == (0, 0)


# ---------------------------------------------------------------- greedy exactness (in-process)

_request_ids = itertools.count(1)

# Greedy identity with and without speculation is a property of the algorithm only where the
# arithmetic is exact enough: verifying several draft positions in one step and decoding one
# token at a time round differently in bf16 (the CPU plugin's default on a CPU with bf16) and
# in a 16- or 8-bit KV cache. So both sides compute in f32 with an f32 cache, on every CPU
# (an f32 cache makes build_pipeline ask for f32 inference as well).
EXACT = EngineConfig("CPU", kv_cache_precision="f32", inference_precision="f32")


def greedy_ids(
    pipe: Any, prompts: list[list[dict[str, Any]]], speculation: Speculation | None, tokens: int
) -> list[list[int]]:
    """Every prompt's greedy token ids, all in one batch, with the engine's own request
    config (the model's defaults, and the assistant fields when speculating)."""
    tokenizer = pipe.get_tokenizer()
    defaults = {**model_defaults(pipe.get_config()), **request_fields(speculation)}
    config = generation_config(SamplingParams(max_new_tokens=tokens), defaults, tokens)
    config.do_sample = False
    handles = []
    for messages in prompts:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = tokenizer.encode(prompt, add_special_tokens=False).input_ids
        handles.append(pipe.add_request(next(_request_ids), ids, config))
    out: list[list[int]] = [[] for _ in handles]
    while any(h.get_status() == og.GenerationStatus.RUNNING or h.can_read() for h in handles):
        pipe.step()
        for got, handle in zip(out, handles, strict=True):
            if handle.can_read():
                for output in handle.read().values():
                    got += list(output.generated_ids)
    return out


def _dialogue_prompts() -> list[list[dict[str, Any]]]:
    return [d["messages"] for d in DIALOGUES.values() if not d["tools"]]


@pytest.mark.parametrize("fmt", ["int8", "fp16", "int4"])
def test_tiny_model_greedy_is_identical_with_speculation(
    tiny_models: dict[str, Path], fmt: str
) -> None:
    path = tiny_models[fmt]
    prompts = _dialogue_prompts()
    plain = greedy_ids(build_pipeline(path, EXACT), prompts, None, 64)
    draft = Speculation("draft", 4, draft_path=str(path))  # the model drafting for itself
    for speculation in (PROMPT_LOOKUP, draft):
        pipe = build_pipeline(path, msgspec.structs.replace(EXACT, speculative=speculation))
        assert greedy_ids(pipe, prompts, speculation, 64) == plain, speculation.method


def test_smollm2_greedy_is_identical_with_prompt_lookup(smollm2_gguf: Path) -> None:
    prompts: list[list[dict[str, Any]]] = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "Write a short poem about the sea."}],
        [
            {
                "role": "user",
                "content": "Repeat exactly: The lighthouse keeper climbed the spiral stairs "
                "every evening at dusk, trimmed the wick and polished the great lens.",
            }
        ],
    ]
    plain = build_pipeline(smollm2_gguf, EXACT)
    expected = greedy_ids(plain, prompts, None, 40)
    del plain
    lookup = build_pipeline(smollm2_gguf, msgspec.structs.replace(EXACT, speculative=PROMPT_LOOKUP))
    assert greedy_ids(lookup, prompts, PROMPT_LOOKUP, 40) == expected


# ---------------------------------------------------------------- through the server

PLAIN = "tiny-int8"
LOOKUP = "tiny-lookup"
DRAFT = "tiny-draft"
MISSING = "tiny-missing-draft"
BROKEN = "tiny-broken-draft"


@pytest.fixture(scope="module")
def broken_draft(tiny_ir_int8: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model whose weights file was cut in half: it exists, it is in the
    registry, and GenAI cannot load it."""
    path = tmp_path_factory.mktemp("drafts") / "broken"
    shutil.copytree(tiny_ir_int8, path)
    weights = path / "openvino_model.bin"
    os.truncate(weights, weights.stat().st_size // 2)
    return path


@pytest.fixture(scope="module")
def spec_server(server_factory: Any, tiny_ir_int8: Path, broken_draft: Path) -> LiveServer:
    base = {"path": str(tiny_ir_int8), "task": "text-generation-with-past", "weight_format": "int8"}
    registry = {
        PLAIN: base,
        LOOKUP: {**base, "speculative": {"method": "prompt_lookup"}},
        DRAFT: {
            **base,
            "speculative": {
                "method": "draft",
                "draft_model": PLAIN,
                "draft_device": "CPU",
                "num_assistant_tokens": 4,
            },
        },
        MISSING: {**base, "speculative": {"method": "draft", "draft_model": "no-such-draft"}},
        BROKEN: {**base, "speculative": {"method": "draft", "draft_model": "broken-draft"}},
        "broken-draft": {**base, "path": str(broken_draft)},
    }
    # The served greedy answers are compared with the plain model's: every engine computes in
    # f32 on every CPU, with one KV cache precision (f16, the speculative engines' own default
    # on a CPU), so that only speculation differs.
    same = {"OV_KV_CACHE_PRECISION": "f16", "OV_INFERENCE_PRECISION": "f32"}
    return server_factory(registry, OV_MAX_LOADED_MODELS="5", **same)


def chat(server: LiveServer, model: str, name: str, **extra: Any) -> dict[str, Any]:
    dialogue = DIALOGUES[name]
    body: dict[str, Any] = {"model": model, "messages": copy.deepcopy(dialogue["messages"])}
    if dialogue["tools"]:
        body["tools"] = TOOLS
    body.update(extra)
    response = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def what_was_said(answer: dict[str, Any]) -> tuple[Any, ...]:
    """An answer without its ids and timestamps: text, calls, finish reason, token count."""
    choice = answer["choices"][0]
    message = choice["message"]
    calls = [
        (c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []
    ]
    return (
        message.get("content"),
        calls,
        choice["finish_reason"],
        answer["usage"]["completion_tokens"],
    )


def model_health(server: LiveServer, name: str) -> dict[str, Any]:
    health = httpx.get(f"{server.base_url}/health", timeout=10).json()
    (model,) = [m for m in health["loaded_models"] if m["name"] == name]
    return {**model, "problems": health["problems"], "status": health["status"]}


def counter(server: LiveServer, metric: str, model: str) -> float | None:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found = re.search(rf'^{metric}_total{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


@pytest.mark.parametrize("model", [LOOKUP, DRAFT])
def test_served_greedy_answers_are_the_plain_models(spec_server: LiveServer, model: str) -> None:
    for name in DIALOGUES:
        expected = what_was_said(chat(spec_server, PLAIN, name, temperature=0))
        assert what_was_said(chat(spec_server, model, name, temperature=0)) == expected, name
    assert model_health(spec_server, model)["speculative"] == (
        "prompt_lookup" if model == LOOKUP else "draft"
    )


@pytest.mark.parametrize("model", [LOOKUP, DRAFT])
def test_forced_tool_call_and_stop_strings_with_speculation(
    spec_server: LiveServer, model: str
) -> None:
    forced = {"tools": TOOLS, "tool_choice": "required", "max_tokens": 60, "temperature": 0}
    expected = what_was_said(chat(spec_server, PLAIN, "D_HELLO", **forced))
    assert expected[1] and expected[1][0][0] == "get_weather"  # the grammar did force a call
    said = what_was_said(chat(spec_server, model, "D_HELLO", **forced))
    assert said[:3] == expected[:3]
    # Usage counts the tokens up to the output that completes the call. A speculative step
    # emits several tokens: the one that closes the call may bring the end token with it,
    # which a plain step leaves to the next. So the counts may differ by that one token.
    assert abs(said[3] - expected[3]) <= 1
    stopped = what_was_said(chat(spec_server, model, "D_STORY", stop=["robot"], temperature=0))
    assert stopped[0] == "Once upon a time a small " and stopped[2] == "stop"


@pytest.mark.parametrize("model", [LOOKUP, DRAFT])
def test_a_seed_gives_the_same_sample_with_speculation(spec_server: LiveServer, model: str) -> None:
    sampled = {"temperature": 2.0, "top_p": 1.0, "max_tokens": 24}

    def text(seed: int) -> str:
        return str(
            chat(spec_server, model, "D_STORY", seed=seed, **sampled)["choices"][0]["message"][
                "content"
            ]
        )

    first = [text(seed) for seed in (1, 2, 3)]
    assert len(set(first)) > 1  # it does sample: seeds differ, texts differ
    assert [text(seed) for seed in (1, 2, 3)] == first


def test_a_client_leaving_mid_stream_cancels_a_speculative_generation(
    spec_server: LiveServer,
) -> None:
    body = {
        "model": DRAFT,
        "messages": DIALOGUES["D_STORY"]["messages"],
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream(
        "POST",
        f"{spec_server.v1}/chat/completions",
        json=body,
        timeout=120,
        headers={"X-Request-Id": "spec-leaves-early"},
    ) as response:
        got = 0
        for line in response.iter_lines():
            got += line.startswith("data: {")
            if got == 5:
                break
    line = spec_server.wait_for_log("request_id=spec-leaves-early", timeout=60)
    assert "status=499" in line
    assert int(line.split("completion_tokens=")[1].split()[0]) < 1000, line
    assert counter(spec_server, "ov_cancelled_requests", DRAFT) == 1
    # The engine goes on: the next answer is exact.
    expected = what_was_said(chat(spec_server, PLAIN, "D_CAPITAL", temperature=0))
    assert what_was_said(chat(spec_server, DRAFT, "D_CAPITAL", temperature=0)) == expected


def test_draft_tokens_are_counted_per_model(spec_server: LiveServer) -> None:
    def counts(model: str) -> tuple[float, float]:
        return (
            counter(spec_server, "ov_spec_draft_tokens", model) or 0.0,
            counter(spec_server, "ov_spec_accepted_tokens", model) or 0.0,
        )

    before = {model: counts(model) for model in (LOOKUP, DRAFT)}
    tokens = {
        model: chat(spec_server, model, "D_STORY", temperature=0)["usage"]["completion_tokens"]
        for model in (PLAIN, LOOKUP, DRAFT)
    }
    (proposed, accepted), (proposed_0, accepted_0) = counts(DRAFT), before[DRAFT]
    proposed, accepted = proposed - proposed_0, accepted - accepted_0
    # Four at a time, all accepted but where the budget or the answer ends.
    assert 4 * (tokens[DRAFT] - 1) / 5 - 4 <= proposed <= 4 * (tokens[DRAFT] - 1) / 5 + 4
    assert 0.9 * proposed <= accepted <= proposed
    # The story quotes nothing of its prompt: prompt lookup validates 5 positions a step
    # and accepts few of them.
    (proposed, accepted), (proposed_0, accepted_0) = counts(LOOKUP), before[LOOKUP]
    proposed, accepted = proposed - proposed_0, accepted - accepted_0
    steps = tokens[LOOKUP] - 1 - accepted
    assert proposed == pytest.approx(5 * steps, abs=5)
    assert counter(spec_server, "ov_spec_draft_tokens", PLAIN) is None
    assert counter(spec_server, "ov_spec_accepted_tokens", PLAIN) is None


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (MISSING, "the draft model 'no-such-draft' is not in the registry"),
        (BROKEN, "Incorrect weights in bin file"),
    ],
)
def test_a_draft_that_cannot_be_used_leaves_the_model_served_without_speculation(
    spec_server: LiveServer, model: str, why: str
) -> None:
    expected = what_was_said(chat(spec_server, PLAIN, "D_HELLO", temperature=0))
    assert what_was_said(chat(spec_server, model, "D_HELLO", temperature=0)) == expected
    health = model_health(spec_server, model)
    assert health["state"] == "ready" and health["speculative"] is None
    (warning,) = health["warnings"]
    assert warning.startswith("speculative decoding (draft) off: ") and why in warning
    assert f"model {model}: {warning}" in health["problems"]
    assert health["status"] == "degraded"
    assert why in spec_server.wait_for_log(why)
    assert counter(spec_server, "ov_spec_draft_tokens", model) is None
