"""The one place that talks to ``openvino_genai``.

Each loaded model gets one :class:`Engine`: a ``ContinuousBatchingPipeline`` and one
thread that owns it. Only that thread calls ``add_request``/``step``, because the
pipeline is not thread-safe. Requests from the event loop enter through an inbox;
their text comes back through :class:`GenerationStream`, one ``call_soon_threadsafe``
per request per step (never a hop or a sleep per token).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import itertools
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openvino_genai as og

from .textmatch import partial_suffix

log = logging.getLogger(__name__)

# After this many consecutive failed engine steps the engine reports itself wedged.
WEDGED_AFTER_FAILURES = 3
# Longest the engine thread waits for an event loop to write out one step's tokens.
FLUSH_WAIT_SECONDS = 0.005


class EngineError(Exception):
    """Generation failed inside OpenVINO."""


class TemplateError(Exception):
    """The chat template could not render the conversation."""


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # EBNF from output/plan.py; never an unchecked user schema
    min_new_tokens: int | None = None
    ignore_eos: bool = False


@dataclass(frozen=True)
class StreamEvent:
    text: str
    completion_tokens: int
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
    error: str | None = None


@dataclass(frozen=True)
class EngineConfig:
    device: str
    max_batch: int = 8
    kv_cache_gb: int = 0
    kv_cache_precision: str | None = None
    cache_dir: Path | None = None


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas.

    Decoding a short window ending at the newest token (instead of each token alone)
    keeps multi-byte characters and tokenizer-specific spacing intact; a trailing
    U+FFFD means a character is still incomplete and is held back.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def windows(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Takes new ids; returns the two windows whose texts :meth:`advance` needs."""
        self._ids.extend(ids)
        return self._ids[self._prefix : self._read], self._ids[self._prefix :]

    def advance(self, prefix_text: str, full_text: str) -> str:
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """The rest of the text at the end, an incomplete character included."""
        prefix, full = self.windows(())
        prefix_text, full_text = (
            str(self._tokenizer.decode(w)) if w else "" for w in (prefix, full)
        )
        self._prefix = self._read = len(self._ids)
        return full_text[len(prefix_text) :]


class StopMatcher:
    """Finds stop sequences in streamed text, holding back what could start one.

    Only the held-back tail is kept: text already emitted cannot be part of a match,
    because its longest suffix that begins a stop sequence was held back with it.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""

    def push(self, delta: str) -> tuple[str, bool]:
        """Returns the text safe to emit now and whether a stop sequence was met."""
        if not self._stops:
            return delta, False
        text = self._held + delta
        hits = [i for i in (text.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return text[: min(hits)], True
        hold = max(partial_suffix(text, stop) for stop in self._stops)
        self._held = text[len(text) - hold :]
        return text[: len(text) - hold], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class GenerationStream:
    """The event-loop side of one request: an async iterator of :class:`StreamEvent`."""

    def __init__(self, engine: Engine, request_id: int) -> None:
        self.engine = engine
        self.request_id = request_id
        self._queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._done = False

    def _put(self, event: StreamEvent) -> None:
        self._queue.put_nowait(event)

    @property
    def done(self) -> bool:
        return self._done

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._done:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event.finish_reason is not None:
            self._done = True
        return event

    def cancel(self) -> None:
        """Stop generating for a client that left; safe to call more than once."""
        if not self._done:
            self.engine.cancel(self.request_id)


@dataclass
class _Request:
    request_id: int
    input_ids: Any
    config: Any
    stream: GenerationStream
    loop: asyncio.AbstractEventLoop
    detokenizer: IncrementalDetokenizer
    stop: StopMatcher
    handle: Any = None
    tokens: int = 0
    finished: bool = False
    last_finish: Any = None


def build_pipeline(path: Path, config: EngineConfig) -> Any:
    """The pipeline of one model as the server runs it (the benchmark's direct engine too)."""
    scheduler = og.SchedulerConfig()
    # 0 lets the KV cache grow with demand instead of reserving it up front.
    scheduler.cache_size = config.kv_cache_gb
    scheduler.max_num_seqs = config.max_batch
    scheduler.dynamic_split_fuse = True
    scheduler.enable_prefix_caching = True
    properties: dict[str, Any] = {}
    if config.kv_cache_precision:
        properties["KV_CACHE_PRECISION"] = config.kv_cache_precision
        if config.kv_cache_precision == "f32":
            # Paged attention refuses an f32 cache beside bf16/f16 inference.
            properties["INFERENCE_PRECISION_HINT"] = "f32"
    if config.cache_dir is not None:
        config.cache_dir.mkdir(parents=True, exist_ok=True)
        properties["CACHE_DIR"] = str(config.cache_dir)
    return og.ContinuousBatchingPipeline(str(path), scheduler, config.device, properties)


def _free_memory() -> None:
    """Give freed heap pages back to the system after a model unloads."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):
            pass


class Engine:
    """One model on one device, continuously batched by one stepping thread."""

    _ids = itertools.count(1)

    def __init__(self, name: str, path: Path, config: EngineConfig) -> None:
        self.name = name
        self.path = path
        self.device = config.device
        self._config = config
        started = time.perf_counter()
        self._pipe = self._build()
        self.tokenizer = self._pipe.get_tokenizer()
        self._base_config = _model_defaults(self._pipe.get_config())
        self.load_seconds = time.perf_counter() - started
        self.chat_template: str = self.tokenizer.chat_template or ""
        self.context_length = _context_length(path)
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self._cv = threading.Condition()
        self._inbox: list[_Request] = []
        self._cancels: set[int] = set()
        self._active: dict[int, _Request] = {}
        self._woken: set[asyncio.AbstractEventLoop] = set()
        self._closing = False
        self.in_flight = 0
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    def _build(self) -> Any:
        return build_pipeline(self.path, self._config)

    @property
    def wedged(self) -> bool:
        return self.consecutive_failures >= WEDGED_AFTER_FAILURES

    # ------------------------------------------------------------ prompt side

    def render_prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> str:
        try:
            return str(
                self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tools=tools or None
                )
            )
        except Exception as exc:  # genai raises RuntimeError with the Jinja message
            raise TemplateError(_one_line(exc)) from exc

    def encode(self, prompt: str) -> Any:
        # The chat template already places BOS where the model wants it.
        return self.tokenizer.encode(prompt, add_special_tokens=False).input_ids

    def count_tokens(self, input_ids: Any) -> int:
        return int(input_ids.get_shape()[-1])

    def count_text_tokens(self, text: str) -> int:
        return self.count_tokens(self.encode(text))

    def _generation_config(self, params: SamplingParams) -> Any:
        cfg = og.GenerationConfig(**self._base_config)
        cfg.max_new_tokens = params.max_new_tokens
        cfg.num_return_sequences = 1
        cfg.apply_chat_template = False
        if params.temperature is not None:
            if params.temperature == 0:
                cfg.do_sample = False
            else:
                cfg.do_sample = True
                cfg.temperature = params.temperature
        if cfg.do_sample:
            if params.top_p is not None:
                cfg.top_p = params.top_p
            if params.top_k is not None and params.top_k > 0:
                cfg.top_k = params.top_k
        if params.seed is not None:
            cfg.rng_seed = params.seed
        if params.presence_penalty is not None:
            cfg.presence_penalty = params.presence_penalty
        if params.frequency_penalty is not None:
            cfg.frequency_penalty = params.frequency_penalty
        if params.repetition_penalty is not None:
            cfg.repetition_penalty = params.repetition_penalty
        if params.min_new_tokens:
            cfg.min_new_tokens = params.min_new_tokens
        if params.ignore_eos:
            cfg.ignore_eos = True
        if params.grammar is not None:
            cfg.structured_output_config = og.StructuredOutputConfig(grammar=params.grammar)
        return cfg

    # ------------------------------------------------------------ loop side

    def submit(self, input_ids: Any, params: SamplingParams) -> GenerationStream:
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        stream = GenerationStream(self, request_id)
        request = _Request(
            request_id=request_id,
            input_ids=input_ids,
            config=self._generation_config(params),
            stream=stream,
            loop=loop,
            detokenizer=IncrementalDetokenizer(self.tokenizer),
            stop=StopMatcher(params.stop),
        )
        with self._cv:
            if self._closing:
                raise EngineError(f"model '{self.name}' is unloading")
            self.in_flight += 1
            self._inbox.append(request)
            self._cv.notify()
        return stream

    def cancel(self, request_id: int) -> None:
        with self._cv:
            self._cancels.add(request_id)
            self._cv.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Cancel what runs, stop the thread and free the model's memory."""
        with self._cv:
            self._closing = True
            self._cancels.update(r.request_id for r in self._inbox)
            self._cancels.update(self._active)
            self._cv.notify()
        self._thread.join(timeout)
        self._pipe = None
        self.tokenizer = None
        _free_memory()

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._inbox or self._cancels or self._active or self._closing):
                    self._cv.wait()
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, set()
                if self._closing and not inbox and not self._active:
                    return
            for request in inbox:
                if request.request_id in cancels:
                    self._finish(request, "cancelled")
                else:
                    self._admit(request)
            for request_id in cancels:
                active = self._active.get(request_id)
                if active is not None:
                    active.handle.cancel()
                    self._finish(active, "cancelled")
            if self._active:
                self._step()
            self._let_loops_flush()

    def _let_loops_flush(self) -> None:
        # step() holds the GIL for its whole run (the binding does not release it): an event
        # loop woken by this step's events would get the GIL only during the next step,
        # delaying every token by one step and delivering them in bursts. Wait (briefly) until
        # each loop has run the callbacks and the stream tasks they woke: the chunks are out.
        loops, self._woken = self._woken, set()
        for loop in loops:
            flushed = threading.Event()
            try:
                loop.call_soon_threadsafe(loop.call_soon, flushed.set)
            except RuntimeError:
                continue
            flushed.wait(FLUSH_WAIT_SECONDS)

    def _admit(self, request: _Request) -> None:
        try:
            request.handle = self._pipe.add_request(
                request.request_id, request.input_ids, request.config
            )
        except Exception as exc:
            self._finish(request, "error", error=_one_line(exc))
            return
        self._active[request.request_id] = request

    def _step(self) -> None:
        try:
            self._pipe.step()
        except Exception as exc:
            self.consecutive_failures += 1
            self.last_error = _one_line(exc)
            log.error("model %s: engine step failed: %s", self.name, self.last_error)
            for request in list(self._active.values()):
                self._finish(request, "error", error=self.last_error)
            self._rebuild()
            return
        self.consecutive_failures = 0
        # One batched decode for every request's windows: each decode call is an inference
        # of the detokenizer model, whose fixed cost dwarfs its cost per token.
        requests = list(self._active.values())
        windows: list[list[int]] = []
        slots: list[int | None] = []
        for request in requests:
            outputs = request.handle.read() if request.handle.can_read() else {}
            output = next(iter(outputs.values()), None)  # one sequence per request (n=1)
            if output is None:
                slots.append(None)
                continue
            ids = list(output.generated_ids)
            request.tokens += len(ids)
            request.last_finish = output.finish_reason
            slots.append(len(windows))
            windows += request.detokenizer.windows(ids)
        texts = self._decode_batch(windows)
        for request, slot in zip(requests, slots, strict=True):
            delta = "" if slot is None else request.detokenizer.advance(*texts[slot : slot + 2])
            self._collect(request, delta)

    def _decode_batch(self, windows: list[list[int]]) -> list[str]:
        texts = [""] * len(windows)
        todo = [i for i, window in enumerate(windows) if window]
        if todo:
            decoded = self.tokenizer.decode([windows[i] for i in todo])
            for i, text in zip(todo, decoded, strict=True):
                texts[i] = str(text)
        return texts

    def _rebuild(self) -> None:
        """A pipeline whose step raised stays broken ("already in scheduling phase"): replace it."""
        if self.wedged:
            return
        self._pipe = None
        _free_memory()
        try:
            self._pipe = self._build()
        except Exception as exc:
            self.consecutive_failures = WEDGED_AFTER_FAILURES
            self.last_error = f"rebuilding the pipeline failed: {_one_line(exc)}"
            log.error("model %s: %s", self.name, self.last_error)
        else:
            log.warning("model %s: pipeline rebuilt after a failed step", self.name)

    def _collect(self, request: _Request, delta: str) -> None:
        handle = request.handle
        new_text, stopped = request.stop.push(delta) if delta else ("", False)
        status = handle.get_status()
        if stopped:
            handle.stop()
            self._finish(request, "stop", text=new_text)
        elif status == og.GenerationStatus.RUNNING:
            if new_text:
                self._send(request, StreamEvent(new_text, request.tokens))
        elif status in (og.GenerationStatus.FINISHED, og.GenerationStatus.STOP):
            tail, stopped = request.stop.push(request.detokenizer.flush())
            if not stopped:
                tail += request.stop.flush()
            reason = "length" if request.last_finish == og.GenerationFinishReason.LENGTH else "stop"
            self._finish(request, "stop" if stopped else reason, text=new_text + tail)
        else:
            self._finish(request, "error", text=new_text, error=f"generation {status.name.lower()}")

    def _finish(
        self, request: _Request, reason: str, *, text: str = "", error: str | None = None
    ) -> None:
        if request.finished:
            return
        request.finished = True
        self._active.pop(request.request_id, None)
        self._send(request, StreamEvent(text, request.tokens, reason, error))

    def _send(self, request: _Request, event: StreamEvent) -> None:
        def deliver() -> None:
            if event.finish_reason is not None:
                self.in_flight -= 1
            request.stream._put(event)

        try:
            request.loop.call_soon_threadsafe(deliver)
            self._woken.add(request.loop)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass


def _model_defaults(config: Any) -> dict[str, Any]:
    """The model's own generation defaults (generation_config.json) that requests inherit."""
    defaults: dict[str, Any] = {
        "do_sample": bool(config.do_sample),
        "temperature": float(config.temperature),
        "top_p": float(config.top_p),
        "repetition_penalty": float(config.repetition_penalty),
        "stop_token_ids": set(config.stop_token_ids),
    }
    if 0 < config.top_k < 2**31:  # "no limit" is SIZE_MAX, which the bindings cannot take back
        defaults["top_k"] = int(config.top_k)
    if config.eos_token_id >= 0:
        defaults["eos_token_id"] = int(config.eos_token_id)
    return defaults


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _context_length(path: Path) -> int | None:
    config = (path if path.is_dir() else path.parent) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = data.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def openvino_version() -> str:
    return str(og.__version__).split("-")[0]
