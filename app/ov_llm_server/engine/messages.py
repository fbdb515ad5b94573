"""What crosses the boundary between the HTTP process and an engine process.

Both sides import this module and nothing else of each other. Each message is one
msgpack-encoded msgspec struct in one zmq message. The engine answers with one
:class:`Step` per pipeline step carrying every generation's new text (an :class:`Output`
each) and every one-shot request's :class:`Reply` (embeddings, rerank, tokenize), never a
message per token per request: at 8 streams that is 8 times fewer messages to encode, send
and wake the HTTP process for. Vectors travel as raw float32 bytes.

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
# What an engine process runs, picked by the registry entry's task: a generative model
# (chat and completions), a sentence embedder, a cross-encoder reranker, a generative model
# that also reads images, a text-to-speech model, or a Whisper speech recogniser.
EngineKind = Literal["llm", "embedding", "rerank", "vlm", "speech", "whisper"]
# One token as the logprobs of an answer show it: its own text (the engine detokenizes)
# and its log probability; the first token of an echoed prompt has none.
TokenLogprob = tuple[str, float]
PromptLogprob = tuple[str, float | None]


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
    # OpenVINO's INFERENCE_PRECISION_HINT (f32, bf16, f16); None: the device's default.
    inference_precision: str | None = None
    cache_dir: str | None = None
    # Embedding and rerank models: inputs one pipeline call takes at most.
    encoder_batch: int = 32
    speculative: Speculation | None = None
    # Text to speech: the registry's voices, (name, embedding file) pairs; a relative file is
    # in the model folder.
    voices: tuple[tuple[str, str], ...] = ()


class EngineSpec(msgspec.Struct, frozen=True):
    """Everything an engine process needs to start, passed on its command line."""

    name: str
    path: str
    config: EngineConfig
    kind: EngineKind
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
    # The chosen token's log probability with each token (GenAI gives no alternatives).
    logprobs: bool = False
    # With ``logprobs``: the prompt's tokens and their log probabilities too.
    echo: bool = False
    # Choices to generate from the one prompt (the API's ``n``): each is its own GenAI
    # request, see ``engine/core/llm.py``.
    n: int = 1


# ---------------------------------------------------------------- HTTP process -> engine


class Image(msgspec.Struct, array_like=True, frozen=True):
    """One image of a chat request, decoded and checked by the HTTP side: 8-bit RGB pixels,
    row by row (the layout GenAI's vision pipelines take as a tensor)."""

    width: int
    height: int
    rgb: bytes


class Generate(msgspec.Struct, tag=True, frozen=True):
    """A generation request, from chat ``messages`` (and ``tools``), which the engine renders
    with the model's chat template, or from a raw ``prompt`` (text or token ids; with a
    ``suffix``, a fill-in-the-middle prompt in the model's own tokens). A request whose
    prompt does not fit is refused."""

    rid: int
    params: SamplingParams
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    suffix: str | None = None
    # A vision model's images, in the order of the image parts in ``messages``.
    images: list[Image] | None = None


class Embed(msgspec.Struct, tag=True, frozen=True):
    """Embed ``texts`` or ``token_ids`` (one list per input). Requests waiting together
    share one pipeline call."""

    rid: int
    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    prompt_name: str | None = None
    truncate: bool = False
    dimensions: int | None = None


class Rerank(msgspec.Struct, tag=True, frozen=True):
    """Score each document's relevance to the query."""

    rid: int
    query: str
    documents: list[str]


class Speak(msgspec.Struct, tag=True, frozen=True):
    """Synthesise ``text`` in ``voice`` (None: the model's default voice)."""

    rid: int
    text: str
    voice: str | None = None


class Transcribe(msgspec.Struct, tag=True, frozen=True):
    """Speech to text (``task`` "transcribe") or to English ("translate"). ``audio``: 16 kHz
    mono samples, float32 little-endian, which the HTTP side decoded. Served one 30 s window
    per step; with ``stream`` every window's text goes out as an :class:`Output` as it is
    done, before the :class:`Transcribed` reply."""

    rid: int
    audio: bytes
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None  # ISO 639-1 ("en"); None: detected
    prompt: str | None = None
    temperature: float = 0.0
    segments: bool = False  # segment timestamps
    words: bool = False  # word timestamps
    stream: bool = False


class Tokenize(msgspec.Struct, tag=True, frozen=True):
    """Token ids of a ``prompt``, or of ``messages`` rendered with the chat template."""

    rid: int
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    token_strs: bool = False


class Detokenize(msgspec.Struct, tag=True, frozen=True):
    rid: int
    tokens: list[int]


# Requests that get one reply rather than a stream of outputs.
Work = Embed | Rerank | Speak | Transcribe | Tokenize | Detokenize


class Cancel(msgspec.Struct, tag=True, frozen=True):
    rid: int


class Shutdown(msgspec.Struct, tag=True, frozen=True):
    pass


ToEngine = (
    Generate | Embed | Rerank | Speak | Transcribe | Tokenize | Detokenize | Cancel | Shutdown
)


# ---------------------------------------------------------------- engine -> HTTP process


class Ready(msgspec.Struct, tag=True, frozen=True):
    device: str
    load_seconds: float
    chat_template: str
    # Tokens one request may take: the context window, or an encoder's maximum input.
    context_length: int | None
    dimension: int | None = None  # an embedder's vector size
    # The speculative method in use ("prompt_lookup", "draft") or None, and what the engine
    # wants an operator to know (e.g. that it loaded without the draft it was given).
    speculative: str | None = None
    warnings: tuple[str, ...] = ()
    # The precision the device computes in (f32, bf16, f16), as OpenVINO resolves the hint on
    # this hardware; None where the device does not say (a virtual device such as AUTO).
    precision: str | None = None


class LoadFailed(msgspec.Struct, tag=True, frozen=True):
    error: str


class Output(msgspec.Struct, array_like=True, frozen=True):
    """New text of one choice of a request in one step; ``finish`` set on the choice's last
    output. A request ends when each of its choices has finished, or at once with a
    "cancelled" or "error" finish (which stands for every choice not finished yet).

    A request's first output acknowledges it: ``prompt_tokens`` set (with the end of the
    rendered prompt, which tells the parsers whether the template opened a think block),
    or ``finish="error"`` with a ``code`` saying why it was refused. A vision model's last
    output sets ``prompt_tokens`` again: the whole prompt's, image tokens included.
    """

    rid: int
    text: str
    tokens: int  # completion tokens so far, of all the request's choices together
    finish: EngineFinish | None = None
    error: str | None = None
    # Why a request was refused: template_error, context_length_exceeded, max_tokens_too_small.
    code: str | None = None
    prompt_tokens: int | None = None
    prompt_tail: str | None = None
    # With SamplingParams.logprobs: one entry per token whose text this output (or an
    # earlier one) carries; their texts add up to the answer's text.
    logprobs: list[TokenLogprob] | None = None
    # With SamplingParams.echo as well: the prompt's tokens, once, on the first step.
    prompt_logprobs: list[PromptLogprob] | None = None
    index: int = 0  # the choice (0 to SamplingParams.n - 1)
    # On a last output: the stop sequence that ended the choice, if one did.
    stop: str | None = None


class Embedded(msgspec.Struct, tag=True, frozen=True):
    """The vectors of one Embed request: float32 rows, little-endian, one per input."""

    rid: int
    vectors: bytes
    dimension: int
    token_counts: list[int]
    batch: int  # inputs in the pipeline call that served this request


class Ranked(msgspec.Struct, tag=True, frozen=True):
    rid: int
    scores: list[float]  # in the documents' order
    tokens: int
    batch: int


class Spoken(msgspec.Struct, tag=True, frozen=True):
    """The waveform of one Speak request: float32 samples, little-endian, mono."""

    rid: int
    samples: bytes
    sample_rate: int
    tokens: int  # the text's tokens, as the model read them


class Segment(msgspec.Struct, array_like=True, frozen=True):
    """A stretch of speech and its text; times in seconds from the start of the audio."""

    start: float
    end: float
    text: str


class Transcribed(msgspec.Struct, tag=True, frozen=True):
    rid: int
    text: str
    language: str | None  # as asked, or as detected in the first window
    duration: float  # seconds of audio
    tokens: int  # generated
    segments: list[Segment] = []  # with Transcribe.segments
    words: list[Segment] = []  # with Transcribe.words


class Tokenized(msgspec.Struct, tag=True, frozen=True):
    rid: int
    ids: list[int]
    strs: list[str] | None = None


class Detokenized(msgspec.Struct, tag=True, frozen=True):
    rid: int
    text: str


class Refused(msgspec.Struct, tag=True, frozen=True):
    """A request that ended without a result. With ``code`` the request was at fault
    (the API answers 400 naming ``param``); without, the engine failed it."""

    rid: int
    error: str
    code: str | None = None
    param: str | None = None


Reply = Embedded | Ranked | Spoken | Transcribed | Tokenized | Detokenized | Refused
# Refused.error of a request the engine dropped at Shutdown (code "cancelled").
STOPPED = "the model was stopped"
# The code of a request refused because it breaks the model (400): the engine found it alone
# failing in a batch that otherwise runs, or the HTTP side saw it crash engines.
POISON_REQUEST = "poison_request"


class Step(msgspec.Struct, tag=True, frozen=True):
    outputs: list[Output]
    sent_at: float  # time.monotonic() in the engine: the same clock in every process
    replies: list[Reply] = []
    # Speculative decoding in this step, over all requests: draft tokens proposed (for prompt
    # lookup: positions validated) and accepted.
    draft_tokens: int = 0
    accepted_tokens: int = 0


class Heartbeat(msgspec.Struct, tag=True, frozen=True):
    sent_at: float


class Fatal(msgspec.Struct, tag=True, frozen=True):
    """The engine cannot go on (its pipeline broke); it exits right after this, and sends
    the failed requests' last outputs after it."""

    error: str
    # The requests of the pipeline call that raised (empty when the failure was elsewhere):
    # the HTTP side holds them suspect of breaking the model.
    rids: list[int] = []


FromEngine = Ready | LoadFailed | Step | Heartbeat | Fatal

encoder = msgspec.msgpack.Encoder()
to_engine_decoder = msgspec.msgpack.Decoder(ToEngine)
from_engine_decoder = msgspec.msgpack.Decoder(FromEngine)
spec_decoder = msgspec.json.Decoder(EngineSpec)
