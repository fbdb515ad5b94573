"""What crosses the boundary between the HTTP process and an engine process.

Both sides import this module and nothing else of each other. Each message is one
msgpack-encoded msgspec struct in one zmq message. The engine answers with one
:class:`Step` per pipeline step carrying every request's new text, never a message per
token per request: at 8 streams that is 8 times fewer messages to encode, send and wake
the HTTP process for.

Why pyzmq and msgspec: zmq frames messages, buffers them in its own I/O thread (a slow
reader never blocks the engine's step loop, which holds the GIL) and plugs into asyncio
on the HTTP side; msgspec encodes typed structs several times faster than pickle or json
and rejects a malformed message instead of guessing.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

# Why a request ended, as the engine reports it. "cancelled": the HTTP side asked for it.
EngineFinish = Literal["stop", "length", "cancelled", "error"]


class Speculation(msgspec.Struct, frozen=True):
    """Speculative decoding of one model, as the registry entry asks for it (the HTTP side
    resolves a draft's registry name to its path)."""

    method: Literal["prompt_lookup", "draft"]
    num_assistant_tokens: int
    max_ngram_size: int = 0  # prompt lookup only
    draft_path: str | None = None  # draft only
    draft_device: str | None = None  # draft only; None: the main model's device


class EngineConfig(msgspec.Struct, frozen=True):
    """How one model's pipeline is built (the same for the server and the benchmark)."""

    device: str
    max_batch: int = 8
    kv_cache_gb: int = 0
    kv_cache_precision: str | None = None
    cache_dir: str | None = None
    speculative: Speculation | None = None


class EngineSpec(msgspec.Struct, frozen=True):
    """Everything an engine process needs to start, passed on its command line."""

    name: str
    path: str
    config: EngineConfig
    inbox: str  # zmq address the engine reads requests from
    outbox: str  # zmq address the engine writes steps to
    heartbeat_seconds: float = 0.5
    parent_pid: int = 0


class SamplingParams(msgspec.Struct, frozen=True):
    """One request's generation settings; the engine maps them onto a GenerationConfig."""

    # Clamped to the room the prompt leaves in the context.
    max_new_tokens: int
    # With a grammar: its shortest answer, which (with the end token) must fit the budget.
    shortest_answer: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # an EBNF the HTTP side built and checked, never a user's text
    min_new_tokens: int | None = None
    ignore_eos: bool = False


# ---------------------------------------------------------------- HTTP process -> engine


class Generate(msgspec.Struct, tag=True, frozen=True):
    """A generation request. The engine renders ``messages`` (and ``tools``) with the model's
    chat template and encodes the result; a request whose prompt does not fit is refused."""

    rid: int
    params: SamplingParams
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None


class Cancel(msgspec.Struct, tag=True, frozen=True):
    rid: int


class Shutdown(msgspec.Struct, tag=True, frozen=True):
    pass


ToEngine = Generate | Cancel | Shutdown


# ---------------------------------------------------------------- engine -> HTTP process


class Ready(msgspec.Struct, tag=True, frozen=True):
    device: str
    load_seconds: float
    chat_template: str
    context_length: int | None
    # The speculative method in use ("prompt_lookup", "draft") or None, and what the engine
    # wants an operator to know (e.g. that it loaded without the draft it was given).
    speculative: str | None = None
    warnings: tuple[str, ...] = ()


class LoadFailed(msgspec.Struct, tag=True, frozen=True):
    error: str


class Output(msgspec.Struct, array_like=True, frozen=True):
    """New text of one request in one step; ``finish`` set on its last output.

    A request's first output acknowledges it: ``prompt_tokens`` set (with the end of the
    rendered prompt, which tells the parsers whether the template opened a think block),
    or ``finish="error"`` with a ``code`` saying why it was refused.
    """

    rid: int
    text: str
    tokens: int  # completion tokens so far
    finish: EngineFinish | None = None
    error: str | None = None
    # Why a request was refused: template_error, context_length_exceeded, max_tokens_too_small.
    code: str | None = None
    prompt_tokens: int | None = None
    prompt_tail: str | None = None


class Step(msgspec.Struct, tag=True, frozen=True):
    outputs: list[Output]
    sent_at: float  # time.monotonic() in the engine: the same clock in every process
    # Speculative decoding in this step, over all requests: draft tokens proposed (for prompt
    # lookup: positions validated) and accepted.
    draft_tokens: int = 0
    accepted_tokens: int = 0


class Heartbeat(msgspec.Struct, tag=True, frozen=True):
    sent_at: float


class Fatal(msgspec.Struct, tag=True, frozen=True):
    """The engine cannot go on (its pipeline broke); it exits right after this."""

    error: str


FromEngine = Ready | LoadFailed | Step | Heartbeat | Fatal

encoder = msgspec.msgpack.Encoder()
to_engine_decoder = msgspec.msgpack.Decoder(ToEngine)
from_engine_decoder = msgspec.msgpack.Decoder(FromEngine)
spec_decoder = msgspec.json.Decoder(EngineSpec)
