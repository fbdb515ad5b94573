"""Wire models of embeddings, rerank, completions and tokenize: validation and shapes that the
openai SDK parses strictly."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from openai.types import CreateEmbeddingResponse
from pydantic import ValidationError

from ov_llm_server.protocol_surface import (
    MAX_EMBEDDING_INPUTS,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    RerankRequest,
    RerankResponse,
    TokenizeRequest,
)


def first_error(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value.errors()[0]["msg"])


# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize(
    ("value", "texts", "ids"),
    [
        ("hello", ["hello"], None),
        (["a", "b"], ["a", "b"], None),
        ([1, 2, 3], None, [[1, 2, 3]]),
        ([[1], [2, 3]], None, [[1], [2, 3]]),
        ([""], [""], None),
    ],
)
def test_embedding_inputs_in_all_four_forms(
    value: Any, texts: list[str] | None, ids: list[list[int]] | None
) -> None:
    request = EmbeddingRequest.model_validate({"model": "m", "input": value, "extra_field": 1})
    assert (request.texts(), request.token_ids()) == (texts, ids)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "'input' must not be empty"),
        (5, "'input' must be a string, a list of strings"),
        ([True], "'input' must be a string"),
        ([1, "a"], "'input' must be a string"),
        ([-1], "'input' must be a string"),
        ([1.5], "'input' must be a string"),
        ([[1], []], "'input[1]' must be a non-empty list of token ids (0 to 2147483647)"),
        (["x"] * (MAX_EMBEDDING_INPUTS + 1), "at most 2048 are allowed"),
    ],
)
def test_malformed_embedding_input_gets_one_clear_message(value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        EmbeddingRequest.model_validate({"model": "m", "input": value})
    assert len(exc.value.errors()) == 1
    assert message in first_error(exc)
    assert exc.value.errors()[0]["loc"] == ("input",)


def test_embedding_options() -> None:
    with pytest.raises(ValidationError):
        EmbeddingRequest(model="m", input="x", encoding_format="int8")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        EmbeddingRequest(model="m", input="x", dimensions=0)
    plain = EmbeddingRequest(model="m", input="x")
    assert not plain.wants_truncation(512) and not plain.truncation_below(512)
    assert EmbeddingRequest(model="m", input="x", truncate=True).wants_truncation(512)
    vllm_max = EmbeddingRequest(model="m", input="x", truncate_prompt_tokens=-1)
    assert vllm_max.wants_truncation(512)
    shorter = EmbeddingRequest(model="m", input="x", truncate_prompt_tokens=100)
    assert not shorter.wants_truncation(512) and shorter.truncation_below(512)


def test_embedding_response_parses_in_the_sdk_in_both_encodings() -> None:
    vectors = np.array([[0.25, -1.5, 3.0], [1e-8, 2.0, -0.125]], dtype=np.float32)
    floats = EmbeddingResponse.build("m", vectors, 7).model_dump(mode="json")
    parsed = CreateEmbeddingResponse.model_validate(floats)
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens == 7
    assert [d.index for d in parsed.data] == [0, 1]
    for encoding in ("float", "base64"):
        body = EmbeddingResponse.build("m", vectors, 7, encoding).model_dump(mode="json")  # type: ignore[arg-type]
        for row, data in zip(vectors, body["data"], strict=True):
            if encoding == "float":
                got = np.array(data["embedding"], dtype=np.float32)
            else:  # what the openai SDK does with base64
                got = np.frombuffer(base64.b64decode(data["embedding"]), dtype="float32")
            assert np.array_equal(got, row)


# ---------------------------------------------------------------- rerank


def test_rerank_documents_as_strings_or_objects() -> None:
    request = RerankRequest.model_validate(
        {"model": "r", "query": "q", "documents": ["a", {"text": "b", "title": "kept"}]}
    )
    assert request.texts() == ["a", "b"]
    assert request.return_documents is True and request.top_n is None
    for bad in ({"documents": []}, {"documents": [{"title": "no text"}]}, {"top_n": -1}):
        with pytest.raises(ValidationError):
            RerankRequest.model_validate({"model": "r", "query": "q", "documents": ["a"], **bad})


def test_rerank_results_sorted_cut_and_with_documents() -> None:
    request = RerankRequest(model="r", query="q", documents=["a", "b", "c", "d"], top_n=3)
    response = RerankResponse.build(
        response_id="rerank-1",
        model="r",
        request=request,
        scores=[0.1, 0.9, 0.5, 0.9],
        total_tokens=40,
    )
    body = response.model_dump(mode="json")
    assert [(r["index"], r["relevance_score"]) for r in body["results"]] == [
        (1, 0.9),
        (3, 0.9),
        (2, 0.5),
    ]
    assert body["results"][0]["document"] == {"text": "b"}
    assert body["usage"] == {"total_tokens": 40}
    everything = RerankRequest(
        model="r", query="q", documents=["a", "b"], top_n=0, return_documents=False
    )
    all_results = RerankResponse.build(
        response_id="x", model="r", request=everything, scores=[0.2, 0.1], total_tokens=1
    )
    assert [(r.index, r.document) for r in all_results.results] == [(0, None), (1, None)]


# ---------------------------------------------------------------- completions


def test_completion_prompts_in_all_forms() -> None:
    assert CompletionRequest(model="m", prompt="hi").prompts() == ["hi"]
    assert CompletionRequest(model="m", prompt=["a", "b"]).prompts() == ["a", "b"]
    assert CompletionRequest(model="m", prompt=[1, 2]).prompts() == [[1, 2]]
    assert CompletionRequest(model="m", prompt=[[1], [2]]).prompts() == [[1], [2]]
    request = CompletionRequest.model_validate(
        {"model": "m", "prompt": "x", "stop": ["a", "", "b"], "top_k": 5, "unknown": True}
    )
    assert request.stops() == ["a", "b"] and request.max_tokens == 16  # OpenAI's default


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": []}, "'prompt' must not be empty"),
        ({"n": 0}, "greater than or equal to 1"),
        ({"best_of": 3}, "best_of must be 1"),
        ({"max_tokens": 0}, "0 only with echo"),
        ({"echo": True, "suffix": "x"}, "echo cannot be combined with suffix"),
        ({"stream_options": {"include_usage": True}}, "only allowed with stream"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4 stop sequences"),
        ({"logprobs": 6}, "less than or equal to 5"),
        ({"temperature": 3}, "less than or equal to 2"),
    ],
)
def test_completion_refusals(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        CompletionRequest.model_validate({"model": "m", "prompt": "x", **fields})
    assert message in first_error(exc)


def test_prompt_scoring_is_allowed() -> None:
    request = CompletionRequest(model="m", prompt="x", max_tokens=0, echo=True, logprobs=1)
    assert request.max_tokens == 0


# ---------------------------------------------------------------- tokenize


def test_tokenize_takes_a_prompt_or_messages() -> None:
    prompt = TokenizeRequest(prompt="hello")
    assert prompt.special_tokens() is True  # vLLM's default for a bare prompt
    chat = TokenizeRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert chat.special_tokens() is False and chat.add_generation_prompt is True
    assert TokenizeRequest(prompt="x", add_special_tokens=False).special_tokens() is False
    for bad in ({}, {"prompt": "x", "messages": [{"role": "user", "content": "y"}]}):
        with pytest.raises(ValidationError, match="either 'prompt' or 'messages'"):
            TokenizeRequest.model_validate(bad)
    with pytest.raises(ValidationError, match="must not be empty"):
        TokenizeRequest.model_validate({"messages": []})


def test_detokenize_takes_non_negative_ids() -> None:
    assert DetokenizeRequest(tokens=[1, 2]).tokens == [1, 2]
    assert DetokenizeRequest(tokens=[]).tokens == []
    for bad in ([-1], [1.5], ["1"], [True]):
        with pytest.raises(ValidationError):
            DetokenizeRequest.model_validate({"tokens": bad})


# ---------------------------------------------------------------- what no engine message carries


@pytest.mark.parametrize(
    ("model", "body", "loc"),
    [
        (EmbeddingRequest, '{"model": "m", "input": ["a", "b\\udc00"]}', ("input", 1)),
        (
            RerankRequest,
            '{"model": "m", "query": "q", "documents": [{"text": "\\ud800"}]}',
            ("documents", 0, "text"),
        ),
        (
            TokenizeRequest,
            '{"prompt": "x", "extra": {"deep": [1, 18446744073709551616]}}',
            ("extra", "deep", 1),
        ),
        (DetokenizeRequest, '{"tokens": [-9223372036854775809]}', ("tokens", 0)),
        (CompletionRequest, '{"model": "m", "prompt": "x", "k\\ud800": 1}', ("k\\ud800",)),
    ],
)
def test_unencodable_values_are_refused_where_they_are(model: Any, body: str, loc: tuple) -> None:
    # Parsed as FastAPI parses a body: json.loads keeps a lone surrogate as it is.
    with pytest.raises(ValidationError) as exc:
        model.model_validate(json.loads(body))
    assert exc.value.errors()[0]["loc"] == loc


def test_the_walk_takes_any_depth_and_real_text() -> None:
    deep: Any = "ok"
    for _ in range(5000):
        deep = [deep]
    request = TokenizeRequest.model_validate({"prompt": "héllo 😀", "x": deep})
    assert request.prompt == "héllo 😀"


def test_token_ids_have_one_range() -> None:
    for ids in ([2**31 - 1], [[0, 2**31 - 1]]):
        assert CompletionRequest.model_validate({"model": "m", "prompt": ids}).prompt == ids
        assert EmbeddingRequest.model_validate({"model": "m", "input": ids}).input == ids
    for ids in ([2**31], [[1, 2**31]], [-1]):
        with pytest.raises(ValidationError):
            CompletionRequest.model_validate({"model": "m", "prompt": ids})
        with pytest.raises(ValidationError):
            EmbeddingRequest.model_validate({"model": "m", "input": ids})
    DetokenizeRequest(tokens=[2**31 - 1])
    with pytest.raises(ValidationError):
        DetokenizeRequest(tokens=[2**31])
