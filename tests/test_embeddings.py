"""Embeddings and rerank on a real server: the tiny encoders in their own engine processes.

Vectors and scores are compared with sentence-transformers and transformers run on the
same weights; requests go through the openai SDK where it has a method, else httpx.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from live_server import LiveServer, error_of
from ov_llm_server.engine.core.precision import effective_precision
from tiny_encoders import (
    DOCUMENTS,
    MAX_SEQ_LENGTH,
    QUERIES,
    reference_embeddings,
    reference_scores,
)
from tolerances import order_agrees, score_tolerance

pytestmark = pytest.mark.slow

TEXTS = DOCUMENTS + QUERIES
BATCH = 8
LONG_TEXT = "the quick brown fox jumps over the lazy dog " * 8  # about 80 tokens


def cosines(a: Any, b: Any) -> Any:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def live(
    server_factory: Any, encoder_registry: dict[str, Any], tiny_registry: dict[str, Any]
) -> LiveServer:
    registry = {
        **encoder_registry,
        # The reranker asked to compute in bf16: it does where the CPU has bf16, and in f32
        # (which its card then says) where it has none.
        "rr-bf16": {**encoder_registry["rr"], "inference_precision": "bf16"},
        "tiny-int8": tiny_registry["tiny-int8"],
    }
    # Batches of 8 inputs: the requests here fill several, and some span more than one.
    return server_factory(registry, OV_MAX_LOADED_MODELS="5", OV_ENCODER_MAX_BATCH=str(BATCH))


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(tiny_encoders: dict[str, Path]) -> Any:
    return reference_embeddings(tiny_encoders["embedder-mean/hf"], TEXTS)


def post(live: LiveServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{live.base_url}{path}", json=body, timeout=120)


def embed(live: LiveServer, **body: Any) -> httpx.Response:
    return post(live, "/v1/embeddings", {"model": "emb", **body})


def vectors_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]])


# ---------------------------------------------------------------- embeddings


def test_vectors_match_sentence_transformers(
    client: openai.OpenAI, reference: Any, tiny_encoders: dict[str, Path]
) -> None:
    from transformers import AutoTokenizer

    result = client.embeddings.create(model="emb", input=TEXTS)
    assert [item.index for item in result.data] == list(range(len(TEXTS)))
    vectors = np.array([item.embedding for item in result.data])
    assert vectors.shape == (len(TEXTS), 64)
    assert cosines(vectors, reference).min() >= 0.999
    assert result.model == "emb" and result.object == "list"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoders["embedder-mean/hf"]))
    expected = sum(len(tokenizer(text)["input_ids"]) for text in TEXTS)
    assert result.usage.prompt_tokens == result.usage.total_tokens == expected
    single = client.embeddings.create(model="emb", input=TEXTS[0])
    assert cosines([single.data[0].embedding], reference[:1]).min() >= 0.999


def test_every_input_form_and_base64(
    live: LiveServer, client: openai.OpenAI, reference: Any, tiny_encoders: dict[str, Path]
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoders["embedder-mean/hf"]))
    ids = [tokenizer(text)["input_ids"] for text in TEXTS[:3]]
    as_ids = vectors_of(embed(live, input=ids))
    assert cosines(as_ids, reference[:3]).min() >= 0.999
    one_array = vectors_of(embed(live, input=ids[0]))
    assert cosines(one_array, reference[:1]).min() >= 0.999
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    sdk = client.embeddings.create(model="emb", input=TEXTS[:2])
    assert cosines([d.embedding for d in sdk.data], reference[:2]).min() >= 0.999
    floats = client.embeddings.create(model="emb", input=TEXTS[:2], encoding_format="float")
    assert np.allclose([d.embedding for d in floats.data], [d.embedding for d in sdk.data])
    raw = embed(live, input=TEXTS[:2], encoding_format="base64").json()["data"]
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw]
    assert cosines(decoded, reference[:2]).min() >= 0.999


def test_the_models_own_prompts_and_dimensions(
    client: openai.OpenAI, live: LiveServer, reference: Any, tiny_encoders: dict[str, Path]
) -> None:
    queries = reference_embeddings(tiny_encoders["embedder-mean/hf"], QUERIES, "query")
    prompted = vectors_of(embed(live, input=QUERIES, prompt_name="query"))
    assert cosines(prompted, queries).min() >= 0.999
    cut = client.embeddings.create(model="emb", input=TEXTS, dimensions=32)
    vectors = np.array([d.embedding for d in cut.data])
    assert vectors.shape == (len(TEXTS), 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosines(vectors, reference[:, :32]).min() >= 0.999


def test_over_length_is_refused_or_truncated(
    live: LiveServer, tiny_encoders: dict[str, Path]
) -> None:
    error = error_of(embed(live, input=[QUERIES[0], LONG_TEXT]), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"
    assert f"maximum of {MAX_SEQ_LENGTH}" in error["message"] and "input 1" in error["message"]
    expected = reference_embeddings(tiny_encoders["embedder-mean/hf"], [LONG_TEXT])
    for asked in ({"truncate": True}, {"truncate_prompt_tokens": -1}):
        response = embed(live, input=[LONG_TEXT], **asked)
        assert cosines(vectors_of(response), expected).min() >= 0.999
        assert response.json()["usage"]["prompt_tokens"] == MAX_SEQ_LENGTH
    error = error_of(embed(live, input=LONG_TEXT, truncate_prompt_tokens=10), 400)
    assert error["param"] == "truncate_prompt_tokens"


@pytest.mark.parametrize(
    ("model", "dimensions", "message"),
    [
        ("emb", 20, "must be one of 64, 32, 16"),
        ("emb-cls", 32, "does not support 'dimensions'"),
    ],
)
def test_unsupported_dimensions(
    live: LiveServer, model: str, dimensions: int, message: str
) -> None:
    error = error_of(embed(live, model=model, input="hello", dimensions=dimensions), 400)
    assert error["param"] == "dimensions" and message in error["message"]


def test_bad_inputs_are_named(live: LiveServer) -> None:
    error = error_of(embed(live, input=[[5, 100000]]), 400)
    assert "token id 100000" in error["message"]
    error = error_of(embed(live, input="hello", prompt_name="passage"), 400)
    assert "unknown prompt 'passage'" in error["message"]
    assert error_of(embed(live, input=[]), 400)["param"] == "input"


def test_concurrent_requests_share_model_calls_and_get_their_own_vectors(
    live: LiveServer, reference: Any
) -> None:
    requests = [TEXTS[i : i + 1 + i % 3] for i in range(len(TEXTS))] * 3
    single = [vectors_of(embed(live, input=texts)) for texts in requests[: len(TEXTS)]]
    before = batch_histogram(live)
    logged_before = len(live.log())

    def send(texts: list[str]) -> httpx.Response:
        return embed(live, input=texts)

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        responses = list(pool.map(send, requests))
    for index, response in enumerate(responses):
        vectors = vectors_of(response)
        assert np.abs(vectors - single[index % len(TEXTS)]).max() < 1e-5
    after = batch_histogram(live)
    # Every request was served by a call of at least its own inputs; some shared one.
    assert after["count"] - before["count"] == len(requests)
    own_inputs = sum(len(texts) for texts in requests)
    assert after["sum"] - before["sum"] > own_inputs
    lines = live.log()[logged_before:]
    logged = [int(m) for m in re.findall(r"embedding request_id=\S+ .* batch=(\d+)", lines)]
    assert max(logged) > 3  # no request here has more than 3 inputs
    assert max(logged) <= BATCH


def test_a_request_larger_than_a_batch_spans_several(live: LiveServer, reference: Any) -> None:
    """24 inputs with batches of 8: three model calls, one answer, in the inputs' order."""
    many = TEXTS * 3
    vectors = vectors_of(embed(live, input=many))
    assert cosines(vectors, np.tile(reference, (3, 1))).min() >= 0.999
    line = live.wait_for_log("inputs=24 ")
    assert line.endswith(f"batch={BATCH}")
    error = error_of(embed(live, input=[*TEXTS, *TEXTS, LONG_TEXT]), 400)
    assert "input 16 has" in error["message"]  # found in the third call, still named right
    ranked = post(
        live, "/v1/rerank", {"model": "rr", "query": QUERIES[0], "documents": DOCUMENTS * 2}
    )
    once = post(live, "/v1/rerank", {"model": "rr", "query": QUERIES[0], "documents": DOCUMENTS})
    scores = {r["index"]: r["relevance_score"] for r in ranked.json()["results"]}
    for result in once.json()["results"]:
        index = result["index"]
        assert scores[index] == pytest.approx(result["relevance_score"], abs=1e-5)
        assert scores[index + len(DOCUMENTS)] == pytest.approx(scores[index], abs=1e-5)


def batch_histogram(live: LiveServer) -> dict[str, float]:
    text = httpx.get(f"{live.base_url}/metrics").text
    found = {}
    for key in ("count", "sum"):
        match = re.search(rf'^ov_encoder_batch_inputs_{key}{{model="emb"}} (\S+)$', text, re.M)
        found[key] = float(match.group(1)) if match else 0.0
    return found


# ---------------------------------------------------------------- rerank


@pytest.mark.parametrize(
    ("model", "path"),
    [("rr", "/v1/rerank"), ("rr", "/rerank"), ("rr", "/v2/rerank"), ("rr-bf16", "/v1/rerank")],
)
def test_rerank_matches_transformers(
    live: LiveServer, tiny_encoders: dict[str, Path], model: str, path: str
) -> None:
    for query in QUERIES:
        response = post(live, path, {"model": model, "query": query, "documents": DOCUMENTS})
        assert response.status_code == 200, response.text
        body = response.json()
        # What the reranker computes in, as OpenVINO resolved it on this CPU (fp16 weights).
        card = httpx.get(f"{live.v1}/models/{model}").json()
        wanted = "f32" if model == "rr" else "bf16"
        assert card["precision_hint"] == wanted
        assert card["precision"] == effective_precision("CPU", wanted)
        tolerance = score_tolerance(card["precision"], base=0.005)
        expected = reference_scores(tiny_encoders["reranker/hf"], query, DOCUMENTS)
        scores = [0.0] * len(DOCUMENTS)
        for result in body["results"]:
            scores[result["index"]] = result["relevance_score"]
        assert [r["relevance_score"] for r in body["results"]] == sorted(scores, reverse=True)
        assert order_agrees(scores, expected, tolerance)
        assert max(abs(scores[i] - expected[i]) for i in range(len(DOCUMENTS))) < tolerance
        assert [r["document"]["text"] for r in body["results"]] == [
            DOCUMENTS[r["index"]] for r in body["results"]
        ]
        assert body["usage"]["total_tokens"] > 0 and body["model"] == model


def test_rerank_top_n_objects_and_no_documents(live: LiveServer) -> None:
    documents = [{"text": text} for text in DOCUMENTS]
    whole = post(live, "/v1/rerank", {"model": "rr", "query": QUERIES[0], "documents": DOCUMENTS})
    top = post(
        live,
        "/v1/rerank",
        {
            "model": "rr",
            "query": QUERIES[0],
            "documents": documents,
            "top_n": 2,
            "return_documents": False,
        },
    ).json()
    assert top["results"] == [
        {"index": r["index"], "relevance_score": r["relevance_score"]}
        for r in whole.json()["results"][:2]
    ]
    # LiteLLM's health check: an empty query, one document.
    check = post(live, "/v1/rerank", {"model": "rr", "query": "", "documents": ["my sample text"]})
    assert check.status_code == 200 and len(check.json()["results"]) == 1


def test_rerank_of_both_segment_conventions_matches_transformers(
    server_factory: Any, tiny_encoders: dict[str, Path]
) -> None:
    """A cross-encoder whose tokenizer gives segment ids and one whose tokenizer does not
    (transformers then runs BERT on zeros), each served in batches of 2 documents: the
    scores and order transformers gives on the same (fp16) weights."""
    names = {"rr": "reranker", "rr-plain": "reranker-no-segments"}
    registry = {
        model: {"path": str(tiny_encoders[f"{name}/fp16"]), "task": "text-classification"}
        for model, name in names.items()
    }
    live = server_factory(registry, OV_ENCODER_MAX_BATCH="2")
    for model, name in names.items():
        for query in QUERIES:
            body = {"model": model, "query": query, "documents": DOCUMENTS}
            response = post(live, "/v1/rerank", body)
            assert response.status_code == 200, response.text
            expected = reference_scores(
                tiny_encoders[f"{name}/hf"], query, DOCUMENTS, fp16_weights=True
            )
            results = response.json()["results"]
            # f32 agrees with transformers to about 1e-6 (summation order only): 1e-4, plus
            # the rounding of the precision the card says the reranker computes in.
            precision = httpx.get(f"{live.v1}/models/{model}").json()["precision"]
            tolerance = score_tolerance(precision, base=1e-4)
            scores = [0.0] * len(DOCUMENTS)
            for result in results:
                scores[result["index"]] = result["relevance_score"]
            assert order_agrees(scores, expected, tolerance)
            np.testing.assert_allclose(scores, expected, rtol=tolerance, atol=0)


# ---------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/v1/embeddings", {"model": "tiny-int8", "input": "x"}, "a generative model"),
        ("/v1/embeddings", {"model": "rr", "input": "x"}, "a reranker"),
        ("/v1/rerank", {"model": "emb", "query": "x", "documents": ["y"]}, "an embedding model"),
        (
            "/v1/chat/completions",
            {"model": "emb", "messages": [{"role": "user", "content": "x"}]},
            "an embedding model",
        ),
        ("/v1/completions", {"model": "rr", "prompt": "x"}, "a reranker"),
    ],
)
def test_a_model_of_another_kind_is_a_400_before_anything_loads(
    live: LiveServer, path: str, body: dict[str, Any], kind: str
) -> None:
    started = time.monotonic()
    error = error_of(post(live, path, body), 400)
    assert error["code"] == "wrong_model_kind" and error["param"] == "model"
    assert kind in error["message"] and path in error["message"]
    assert time.monotonic() - started < 5  # no model was loaded for it


def test_cards_and_health_show_each_kind(live: LiveServer) -> None:
    embed(live, input="hello")
    post(live, "/v1/rerank", {"model": "rr", "query": "q", "documents": ["d"]})
    listing = httpx.get(f"{live.v1}/models", timeout=60).json()
    cards = {c["id"]: c for c in listing["data"]}
    assert {name: c["mode"] for name, c in cards.items()} == {
        "emb": "embedding",
        "emb-cls": "embedding",
        "rr": "rerank",
        "rr-bf16": "rerank",
        "tiny-int8": "chat",
    }
    assert cards["emb"]["max_model_len"] == MAX_SEQ_LENGTH == cards["rr"]["max_model_len"]
    assert cards["emb"]["dimension"] == 64
    assert cards["tiny-int8"]["max_model_len"] == cards["tiny-int8"]["context_length"] > 0
    loaded = {
        m["name"]: m["kind"] for m in httpx.get(f"{live.base_url}/health").json()["loaded_models"]
    }
    assert loaded["emb"] == "embedding" and loaded["rr"] == "rerank"


def test_tokenize_on_an_encoder(live: LiveServer, tiny_encoders: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoders["embedder-mean/hf"]))
    body = post(live, "/tokenize", {"model": "emb", "prompt": QUERIES[0]}).json()
    assert body["tokens"] == tokenizer(QUERIES[0])["input_ids"]
    assert body["max_model_len"] == MAX_SEQ_LENGTH
    error = error_of(
        post(live, "/tokenize", {"model": "emb", "messages": [{"role": "user", "content": "x"}]}),
        400,
    )
    assert "no chat template" in error["message"]


# ---------------------------------------------------------------- the engine dies


def test_an_engine_killed_mid_batch_fails_its_requests_with_503_and_comes_back(
    server_factory: Any, encoder_registry: dict[str, Any], reference: Any
) -> None:
    registry = {"emb": encoder_registry["emb"]}
    # Calls of 1024 inputs take a while even for the tiny model: time to kill it.
    killed = server_factory(registry, OV_ENCODER_MAX_BATCH="1024")
    assert vectors_of(embed(killed, input=TEXTS)).shape == (len(TEXTS), 64)
    (engine,) = httpx.get(f"{killed.base_url}/health").json()["loaded_models"]
    many = [f"{LONG_TEXT[:200]} {i}" for i in range(2048)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(embed, killed, input=many, truncate=True) for _ in range(3)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            loaded = httpx.get(f"{killed.base_url}/health").json()["loaded_models"]
            if loaded[0]["in_flight"] == 3:
                break
            time.sleep(0.01)
        time.sleep(0.05)
        os.kill(engine["pid"], signal.SIGKILL)
        responses = [future.result() for future in futures]
    for response in responses:  # every one of them was waiting for the killed engine
        error = error_of(response, 503)
        assert error["code"] == "engine_restarting" and "SIGKILL" in error["message"]
        assert int(response.headers["retry-after"]) >= 1
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        (after,) = httpx.get(f"{killed.base_url}/health").json()["loaded_models"]
        if after["state"] == "ready" and after["restarts"] == 1:
            break
        time.sleep(0.1)
    assert after["pid"] != engine["pid"] and "SIGKILL" in after["last_error"]
    assert cosines(vectors_of(embed(killed, input=TEXTS)), reference).min() >= 0.999
