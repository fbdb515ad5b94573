"""Generation inside the engine process: one continuous-batching pipeline and its requests.

Only the engine loop calls into a :class:`LlmRunner`, so the pipeline (which is not
thread-safe) is only ever touched by one thread. :meth:`LlmRunner.add` renders a request's
messages with the chat template and encodes them here, where the tokenizer lives: GenAI's
tokenizer holds the GIL while it loads (seconds for a GGUF), which would freeze the HTTP
process's event loop. Each :meth:`LlmRunner.step` runs one pipeline step and turns its new
tokens into text: one batched detokenizer call for every request, then stop sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import openvino as ov
import openvino_genai as og

from ...capabilities import context_length
from ...textutil import one_line
from ..messages import EngineConfig, EngineFinish, Generate, Output, Speculation
from . import faults
from .pipelines import build_pipeline
from .sampling import generation_config, model_defaults
from .speculation import DraftCounter, request_fields
from .text import IncrementalDetokenizer, StopMatcher

log = logging.getLogger("ov_llm_server.engine")


@dataclass
class _Request:
    rid: int
    handle: Any
    detokenizer: IncrementalDetokenizer
    stop: StopMatcher
    budget: int = 0  # max_new_tokens
    tokens: int = 0
    last_finish: Any = None


class RequestRefused(Exception):
    """A request that cannot run, with the API error code that says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class LlmRunner:
    """One generative model, continuously batched."""

    def __init__(self, path: Path, config: EngineConfig) -> None:
        self.warnings: list[str] = []
        self._pipe, speculative = self._build(path, config)
        self.speculative = speculative.method if speculative is not None else None
        self._drafts = DraftCounter(speculative)
        self._tokenizer = self._pipe.get_tokenizer()
        self._defaults = model_defaults(self._pipe.get_config())
        self._defaults.update(request_fields(speculative))
        self._active: dict[int, _Request] = {}
        self.chat_template: str = self._tokenizer.chat_template or ""
        self.context_length = context_length(path)

    def _build(self, path: Path, config: EngineConfig) -> tuple[Any, Speculation | None]:
        """The pipeline and its speculation; without speculation when that cannot load."""
        if config.speculative is None:
            return build_pipeline(path, config), None
        try:
            return build_pipeline(path, config), config.speculative
        except Exception as exc:
            # A broken or mismatched draft must not take the model down with it: serve it
            # plainly (if the model itself is broken, this build fails too, and says so).
            warning = f"speculative decoding ({config.speculative.method}) off: {one_line(exc)}"
            log.warning("%s; loading the model without it", warning)
            self.warnings.append(warning)
            plain = msgspec.structs.replace(config, speculative=None)
            return build_pipeline(path, plain), None

    @property
    def busy(self) -> bool:
        return bool(self._active)

    def draft_counts(self) -> tuple[int, int]:
        """Draft tokens proposed and accepted since the last call."""
        return self._drafts.take()

    def add(self, request: Generate) -> Output:
        """Starts a request. The Output acknowledges it, or says why it was refused."""
        try:
            faults.check("add")
            prompt, ids = self._prompt(request)
            params = request.params
            max_new = self._budget(len(ids), params.max_new_tokens, params.shortest_answer)
            config = generation_config(params, self._defaults, max_new)
            tensor = ov.Tensor(np.array([ids], dtype=np.int64))
            handle = self._pipe.add_request(request.rid, tensor, config)
        except faults.InjectedFault:
            raise
        except RequestRefused as exc:
            return Output(request.rid, "", 0, "error", str(exc), code=exc.code)
        except Exception as exc:  # a request GenAI refuses ends alone; the engine goes on
            return Output(request.rid, "", 0, "error", one_line(exc))
        self._active[request.rid] = _Request(
            request.rid,
            handle,
            IncrementalDetokenizer(self._tokenizer),
            StopMatcher(request.params.stop),
            budget=max_new,
        )
        return Output(request.rid, "", 0, prompt_tokens=len(ids), prompt_tail=prompt[-64:])

    def _prompt(self, request: Generate) -> tuple[str, list[int]]:
        try:
            prompt = str(
                self._tokenizer.apply_chat_template(
                    request.messages, add_generation_prompt=True, tools=request.tools or None
                )
            )
        except Exception as exc:  # genai raises RuntimeError with the Jinja message
            raise RequestRefused(
                "template_error",
                f"The model's chat template cannot render these messages: {one_line(exc)}",
            ) from exc
        # The chat template already places BOS where the model wants it.
        return prompt, self._encode(prompt)

    def _budget(self, prompt_tokens: int, wanted: int, shortest_answer: str | None) -> int:
        """The new tokens a request may generate: what it asked for, within the context."""
        budget = wanted
        if self.context_length is not None:
            room = self.context_length - prompt_tokens
            if room <= 0:
                raise RequestRefused(
                    "context_length_exceeded",
                    f"This model's maximum context length is {self.context_length} tokens; "
                    f"the messages take {prompt_tokens}",
                )
            budget = min(wanted, room)
        if shortest_answer is not None:
            needed = len(self._encode(shortest_answer)) + 1  # and the end token
            if needed > budget:
                what = f"max_tokens {wanted}" if budget == wanted else f"the {budget} tokens left"
                raise RequestRefused(
                    "max_tokens_too_small",
                    f"{what} is too small: the shortest answer that fits the schema takes "
                    f"{needed} tokens",
                )
        return budget

    def _encode(self, text: str) -> list[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]
        return list(ids.tolist())

    def cancel(self, rid: int) -> Output | None:
        request = self._active.pop(rid, None)
        if request is None:
            return None
        request.handle.cancel()
        return Output(rid, "", request.tokens, "cancelled")

    def cancel_all(self) -> list[Output]:
        return [out for rid in list(self._active) if (out := self.cancel(rid)) is not None]

    def fail_all(self, error: str) -> list[Output]:
        """Ends every request with an error (the engine is about to exit)."""
        outputs = [Output(r.rid, "", r.tokens, "error", error) for r in self._active.values()]
        self._active.clear()
        return outputs

    def step(self) -> list[Output]:
        """One pipeline step. An exception here means the pipeline is broken."""
        faults.check("step")
        self._pipe.step()
        faults.check("read")
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
            self._drafts.count(request.tokens, len(ids), request.budget)
            request.tokens += len(ids)
            request.last_finish = output.finish_reason
            slots.append(len(windows))
            windows += request.detokenizer.windows(ids)
        faults.check("detokenize")
        # One batched decode for every request's windows: each decode call is an inference
        # of the detokenizer model, whose fixed cost dwarfs its cost per token.
        texts = self._decode_batch(windows)
        results: list[Output] = []
        for request, slot in zip(requests, slots, strict=True):
            delta = "" if slot is None else request.detokenizer.advance(*texts[slot : slot + 2])
            result = self._collect(request, delta)
            if result is not None:
                results.append(result)
        return results

    def _decode_batch(self, windows: list[list[int]]) -> list[str]:
        texts = [""] * len(windows)
        todo = [i for i, window in enumerate(windows) if window]
        if todo:
            decoded = self._tokenizer.decode([windows[i] for i in todo])
            for i, text in zip(todo, decoded, strict=True):
                texts[i] = str(text)
        return texts

    def _collect(self, request: _Request, delta: str) -> Output | None:
        handle = request.handle
        new_text, stopped = request.stop.push(delta) if delta else ("", False)
        status = handle.get_status()
        if stopped:
            handle.stop()
            return self._finish(request, "stop", new_text)
        if status == og.GenerationStatus.RUNNING:
            return Output(request.rid, new_text, request.tokens) if new_text else None
        if status in (og.GenerationStatus.FINISHED, og.GenerationStatus.STOP):
            tail, stopped = request.stop.push(request.detokenizer.flush())
            if not stopped:
                tail += request.stop.flush()
            reason: EngineFinish = (
                "length" if request.last_finish == og.GenerationFinishReason.LENGTH else "stop"
            )
            return self._finish(request, "stop" if stopped else reason, new_text + tail)
        return self._finish(request, "error", new_text, f"generation {status.name.lower()}")

    def _finish(
        self, request: _Request, reason: EngineFinish, text: str, error: str | None = None
    ) -> Output:
        self._active.pop(request.rid, None)
        return Output(request.rid, text, request.tokens, reason, error)
