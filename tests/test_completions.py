"""Legacy completions, log probabilities, and /tokenize and /detokenize on the tiny chat model.

Completions share the engine's generation path with chat: the chat prompt, tokenized by
``/tokenize`` and sent as a token-id prompt, gives exactly the chat answer, with the same
log probabilities.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from live_server import LiveServer, error_of
from tiny_model import DIALOGUES

MODEL = "tiny-int8"
HELLO = DIALOGUES["D_HELLO"]
CAPITAL = DIALOGUES["D_CAPITAL"]


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def post(server: LiveServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def chat_prompt_ids(server: LiveServer, messages: Any) -> list[int]:
    response = post(server, "/tokenize", {"model": MODEL, "messages": messages})
    assert response.status_code == 200, response.text
    ids: list[int] = response.json()["tokens"]
    return ids


def sse_data(response: httpx.Response) -> list[Any]:
    data = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


# ---------------------------------------------------------------- completions


def test_the_chat_prompt_completed_is_the_chat_answer(
    server: LiveServer, client: openai.OpenAI
) -> None:
    ids = chat_prompt_ids(server, HELLO["messages"])
    chat = client.chat.completions.create(model=MODEL, messages=HELLO["messages"])
    completion = client.completions.create(model=MODEL, prompt=ids, max_tokens=64)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    choice = completion.choices[0]
    assert choice.text == HELLO["answer"] == chat.choices[0].message.content
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and chat.usage is not None
    assert completion.usage.prompt_tokens == chat.usage.prompt_tokens == len(ids)
    assert completion.usage.completion_tokens == chat.usage.completion_tokens


def test_streaming_gives_the_same_text_and_usage(client: openai.OpenAI) -> None:
    prompt = "Hello"
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12)
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=prompt,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [whole.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and not chunks[-1].choices
    assert usage[0] == whole.usage


def test_stop_sequences_cut_the_text_and_its_logprobs(server: LiveServer) -> None:
    ids = chat_prompt_ids(server, CAPITAL["messages"])
    body = {"model": MODEL, "prompt": ids, "max_tokens": 64, "logprobs": 0, "stop": [" Paris"]}
    choice = post(server, "/v1/completions", body).json()["choices"][0]
    assert choice["text"] == CAPITAL["answer"].split(" Paris")[0]
    assert choice["finish_reason"] == "stop"
    assert "".join(choice["logprobs"]["tokens"]).startswith(choice["text"])
    assert " Paris" not in "".join(choice["logprobs"]["tokens"][:-1])


def test_echo_and_scoring_the_prompt(server: LiveServer) -> None:
    prompt = "Hello there"
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 3, "echo": True, "logprobs": 0}
    choice = post(server, "/v1/completions", body).json()["choices"][0]
    assert choice["text"].startswith(prompt) and len(choice["text"]) > len(prompt)
    logprobs = choice["logprobs"]
    tokenized = post(server, "/tokenize", {"model": MODEL, "prompt": prompt}).json()
    prompt_tokens = tokenized["count"]
    # The prompt's tokens first (the first has no probability), then the new ones.
    assert logprobs["token_logprobs"][0] is None
    assert all(lp <= 0 for lp in logprobs["token_logprobs"][1:])
    assert "".join(logprobs["tokens"][:prompt_tokens]) == prompt
    assert "".join(logprobs["tokens"][prompt_tokens:]) == choice["text"][len(prompt) :]
    offsets = logprobs["text_offset"]
    assert [
        choice["text"][o : o + len(t)] for o, t in zip(offsets, logprobs["tokens"], strict=True)
    ] == logprobs["tokens"]
    scored = post(server, "/v1/completions", {**body, "max_tokens": 0}).json()
    assert scored["choices"][0]["text"] == prompt
    assert (
        scored["choices"][0]["logprobs"]["token_logprobs"]
        == logprobs["token_logprobs"][:prompt_tokens]
    )
    assert scored["usage"]["completion_tokens"] == 0


def test_streamed_echo_comes_first(server: LiveServer) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "echo": True, "stream": True}
    with httpx.stream("POST", f"{server.v1}/completions", json=body, timeout=60) as response:
        chunks = sse_data(response)
    assert chunks[0]["choices"][0]["text"].startswith("Hello")
    whole = post(server, "/v1/completions", {**body, "stream": False}).json()
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]


def test_sampling_fields_are_taken(client: openai.OpenAI) -> None:
    def sample() -> str:
        completion = client.completions.create(
            model=MODEL,
            prompt="Hello",
            max_tokens=8,
            temperature=0.8,
            top_p=0.9,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            extra_body={"top_k": 20, "repetition_penalty": 1.1},
        )
        return completion.choices[0].text

    assert sample() == sample()


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"prompt": "x", "suffix": "y"}, "suffix", "fill-in-the-middle"),
        ({"prompt": "x", "logprobs": 2}, "logprobs", "no alternatives"),
        ({"prompt": ["a", "b"]}, "prompt", "one prompt per request"),
        ({"prompt": [1, 2], "echo": True}, "echo", "token-id prompts"),
        ({"prompt": [10**9]}, "prompt", "outside this model's vocabulary"),
        ({"prompt": "x", "max_tokens": 100000}, "max_tokens", "exceeds this server's limit"),
    ],
)
def test_what_cannot_be_served_is_a_400(
    server: LiveServer, body: dict[str, Any], param: str, needle: str
) -> None:
    error = error_of(post(server, "/v1/completions", {"model": MODEL, **body}), 400)
    assert error["param"] == param and needle in error["message"], error


# ---------------------------------------------------------------- log probabilities


def test_chat_logprobs_are_the_chosen_tokens(server: LiveServer, client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(model=MODEL, messages=HELLO["messages"], logprobs=True)
    choice = chat.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content == HELLO["answer"]
    assert all(t.top_logprobs == [] and t.bytes == list(t.token.encode()) for t in tokens)
    # The same prompt as a completion: the same tokens, the same probabilities.
    ids = chat_prompt_ids(server, HELLO["messages"])
    completion = post(
        server, "/v1/completions", {"model": MODEL, "prompt": ids, "max_tokens": 64, "logprobs": 0}
    ).json()["choices"][0]["logprobs"]
    # The completion also reports the end token, whose text is empty.
    assert completion["tokens"][: len(tokens)] == [t.token for t in tokens]
    assert completion["token_logprobs"][: len(tokens)] == pytest.approx(
        [t.logprob for t in tokens], abs=1e-4
    )
    without = client.chat.completions.create(model=MODEL, messages=HELLO["messages"])
    assert without.choices[0].logprobs is None


def test_streamed_chat_logprobs_add_up_to_the_content(server: LiveServer) -> None:
    body = {"model": MODEL, "messages": CAPITAL["messages"], "logprobs": True, "stream": True}
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, timeout=60) as response:
        chunks = sse_data(response)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    tokens = [
        entry["token"]
        for c in chunks
        if c["choices"] and c["choices"][0]["logprobs"]
        for entry in c["choices"][0]["logprobs"]["content"]
    ]
    assert content == CAPITAL["answer"]
    assert "".join(tokens) == content


def test_alternatives_are_refused_not_ignored(server: LiveServer) -> None:
    body = {"model": MODEL, "messages": HELLO["messages"], "logprobs": True, "top_logprobs": 2}
    error = error_of(post(server, "/v1/chat/completions", body), 400)
    assert error["param"] == "top_logprobs" and "no alternatives" in error["message"]
    zero = post(server, "/v1/chat/completions", {**body, "top_logprobs": 0})
    assert zero.status_code == 200


# ---------------------------------------------------------------- tokenize, detokenize


def test_tokenize_and_detokenize_round_trip(server: LiveServer) -> None:
    text = 'Hello! {"city": "Paris"} héllo ✓'
    body = post(server, "/tokenize", {"model": MODEL, "prompt": text, "return_token_strs": True})
    tokenized = body.json()
    assert tokenized["count"] == len(tokenized["tokens"]) == len(tokenized["token_strs"])
    assert tokenized["max_model_len"] > 0
    back = post(server, "/detokenize", {"model": MODEL, "tokens": tokenized["tokens"]}).json()
    assert back == {"prompt": text}
    completion = post(server, "/v1/completions", {"model": MODEL, "prompt": text, "max_tokens": 1})
    assert completion.json()["usage"]["prompt_tokens"] == tokenized["count"]


def test_tokenize_refusals(server: LiveServer) -> None:
    error = error_of(post(server, "/detokenize", {"model": MODEL, "tokens": [10**9]}), 400)
    assert error["param"] == "tokens" and "outside this model's vocabulary" in error["message"]
    error = error_of(post(server, "/tokenize", {"prompt": "x"}), 400)
    assert error["param"] == "model"
    error_of(post(server, "/tokenize", {"model": "no-such-model", "prompt": "x"}), 404)
