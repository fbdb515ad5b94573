"""Generation inside the engine process: one continuous-batching pipeline and its requests.

Only the engine loop calls into a :class:`LlmRunner`, so the pipeline (which is not
thread-safe) is only ever touched by one thread. :meth:`LlmRunner.add` renders a request's
messages with the chat template (or takes a raw prompt) and encodes it here, where the
tokenizer lives: GenAI's tokenizer holds the GIL while it loads (seconds for a GGUF), which
would freeze the HTTP process's event loop. Each :meth:`LlmRunner.step` runs one pipeline
step and turns its new tokens into text: one batched detokenizer call for every request,
then stop sequences.

Log probabilities: GenAI 2026.4 reports the chosen token's log probability only (no
alternatives), for generated tokens and, with ``echo``, for the prompt's.

Several choices of one prompt (the API's ``n``) are as many GenAI requests of one sequence
each, not one request with ``num_return_sequences``. What GenAI 2026.4 does with
``num_return_sequences`` above 1 rules it out: it streams nothing until every sequence has
finished (``SequenceGroup::notify_handle`` pushes partial outputs for a single sequence only);
a grammar (structured output, forced tool calls) no longer holds, as if the sequences shared
one grammar matcher (a JSON schema at temperature 1.5: 12 of 12 sampled sequences invalid
JSON, against 4 of 4 valid with one sequence a request); and greedy decoding refuses it. Apart,
each choice streams, stops at its own stop sequence and keeps its own grammar; the
scheduler's prefix cache shares the prompt's KV blocks once computed. Choice ``i`` samples
with the seed ``seed + i`` (without a seed, from a random one), so choice 0 is the answer the
same request with ``n`` 1 gets; greedy choices are the same answer ``n`` times, as greedy
decoding is.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import openvino as ov
import openvino_genai as og

from ...model_files import context_length
from ...textutil import one_line
from ..messages import (
    EngineConfig,
    EngineFinish,
    Generate,
    Output,
    PromptLogprob,
    SamplingParams,
    Speculation,
    TokenLogprob,
    Work,
)
from . import faults
from .pipelines import build_pipeline
from .runner import Result
from .sampling import generation_config, model_defaults
from .speculation import DraftCounter, request_fields
from .text import (
    IncrementalDetokenizer,
    StopMatcher,
    TokenLogprobs,
    decode_windows,
    token_texts,
)
from .tokens import Vocabulary

# Fill-in-the-middle markers (prefix, suffix, middle) of the model families that have them,
# in the prefix-suffix-middle order all of them were trained on.
FIM_MARKERS = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, ...
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder, ...
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
)


def fim_markers(is_token: Callable[[str], bool]) -> tuple[str, str, str] | None:
    """The first family of fill-in-the-middle markers that are each one token of the model."""
    return next((m for m in FIM_MARKERS if all(is_token(marker) for marker in m)), None)


def fim_prompt(markers: tuple[str, str, str], prefix: str, suffix: str) -> str:
    begin, hole, end = markers
    return f"{begin}{prefix}{hole}{suffix}{end}"


log = logging.getLogger("ov_llm_server.engine")


# What GenAI's rng_seed (a size_t) takes: a choice's seed wraps around it.
_SEEDS = 2**64


@dataclass
class _Sequence:
    """One choice of a request: one GenAI request."""

    rid: int
    index: int
    handle: Any
    detokenizer: IncrementalDetokenizer
    stop: StopMatcher
    logprobs: TokenLogprobs | None
    echoed: int  # prompt tokens the first read starts with (GenAI's echo)
    budget: int = 0  # max_new_tokens
    tokens: int = 0
    last_finish: Any = None
    finished: bool = False


@dataclass
class _Request:
    """A request and its choices, until the last of them has finished."""

    rid: int
    sequences: list[_Sequence]

    @property
    def tokens(self) -> int:
        return sum(sequence.tokens for sequence in self.sequences)

    @property
    def running(self) -> list[_Sequence]:
        return [sequence for sequence in self.sequences if not sequence.finished]


class RequestRefused(Exception):
    """A request that cannot run, with the API error code that says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class LlmRunner:
    """One generative model, continuously batched."""

    accepts: tuple[type[Generate | Work], ...] = (Generate,)
    dimension: int | None = None

    def __init__(self, path: Path, config: EngineConfig) -> None:
        self.warnings: list[str] = []
        self._pipe, speculative = self._build(path, config)
        self.speculative: str | None = speculative.method if speculative else None
        self._drafts = DraftCounter(speculative)
        self._tokenizer = self._pipe.get_tokenizer()
        self._defaults = model_defaults(self._pipe.get_config())
        self._defaults.update(request_fields(speculative))
        self._active: dict[int, _Request] = {}
        self._genai_ids = itertools.count()  # GenAI's request ids: one per choice
        self.chat_template: str = self._tokenizer.chat_template or ""
        self.context_length = context_length(path)
        self.vocabulary = Vocabulary(self._tokenizer, self._render if self.chat_template else None)
        self._fim = fim_markers(self._is_token)

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

    def add(self, request: Generate | Work) -> Result:
        """Starts a request. The Output acknowledges it, or says why it was refused."""
        assert isinstance(request, Generate)
        try:
            faults.check("add")
            prompt, ids = self._prompt(request)
            faults.mark(request.rid, prompt)
            params = request.params
            prompt_tokens = self._prompt_tokens(request, ids)
            max_new = self._budget(prompt_tokens, params.max_new_tokens, params.shortest_answer)
            # GenAI's echo gives the prompt's log probabilities; with no new token it is also
            # what lets a request only score its prompt.
            echo = params.echo and (params.logprobs or max_new == 0)
            handles = self._add_choices(request, prompt, ids, params, max_new, echo)
        except faults.InjectedFault:
            raise
        except RequestRefused as exc:
            return Output(request.rid, "", 0, "error", str(exc), code=exc.code)
        except Exception as exc:  # a request GenAI refuses ends alone; the engine goes on
            return Output(request.rid, "", 0, "error", one_line(exc))
        sequences = [
            _Sequence(
                request.rid,
                index,
                handle,
                IncrementalDetokenizer(
                    self._tokenizer,
                    per_token=params.logprobs,
                    whole_characters=params.grammar is not None,
                ),
                StopMatcher(params.stop),
                TokenLogprobs() if params.logprobs else None,
                len(ids) if echo else 0,
                budget=max_new,
            )
            for index, handle in enumerate(handles)
        ]
        self._active[request.rid] = _Request(request.rid, sequences)
        return Output(request.rid, "", 0, prompt_tokens=prompt_tokens, prompt_tail=prompt[-64:])

    def _prompt_tokens(self, request: Generate, ids: list[int]) -> int:
        """The tokens the prompt takes in the context."""
        return len(ids)

    def _add_request(
        self, genai_id: int, request: Generate, prompt: str, ids: list[int], config: Any
    ) -> Any:
        """Hands one choice of the request to the pipeline; its generation handle."""
        tensor = ov.Tensor(np.array([ids], dtype=np.int64))
        return self._pipe.add_request(genai_id, tensor, config)

    def _add_choices(
        self,
        request: Generate,
        prompt: str,
        ids: list[int],
        params: SamplingParams,
        max_new: int,
        echo: bool,
    ) -> list[Any]:
        """One GenAI request per choice; none left behind if GenAI refuses one."""
        seed = params.seed
        if params.n > 1 and seed is None:
            seed = random.getrandbits(63)
        handles: list[Any] = []
        try:
            for index in range(params.n):
                choice = params
                if seed is not None:
                    choice = msgspec.structs.replace(params, seed=(seed + index) % _SEEDS)
                config = generation_config(choice, self._defaults, max_new, echo=echo)
                genai_id = next(self._genai_ids)
                handles.append(self._add_request(genai_id, request, prompt, ids, config))
        except BaseException:
            for handle in handles:
                handle.cancel()
            raise
        return handles

    def _prompt(self, request: Generate) -> tuple[str, list[int]]:
        if request.messages is not None:
            try:
                prompt = self._render(request.messages, True, request.tools)
            except Exception as exc:  # genai raises RuntimeError with the Jinja message
                raise RequestRefused(
                    "template_error",
                    f"The model's chat template cannot render these messages: {one_line(exc)}",
                ) from exc
            # The chat template already places BOS where the model wants it.
            return prompt, self.vocabulary.encode(prompt, add_special_tokens=False)
        if request.prompt_ids is not None:
            size = len(self.vocabulary.strings)
            bad = next((i for i in request.prompt_ids if not 0 <= i < size), None)
            if bad is not None:
                raise RequestRefused(
                    "invalid_token_id",
                    f"token id {bad} is outside this model's vocabulary (0 to {size - 1})",
                )
            return "", list(request.prompt_ids)
        prompt = request.prompt or ""
        if request.suffix is not None:
            if self._fim is None:
                raise RequestRefused(
                    "fim_unsupported",
                    "'suffix' needs a model trained for fill-in-the-middle; this one has no "
                    "fill-in-the-middle tokens",
                )
            prompt = fim_prompt(self._fim, prompt, request.suffix)
        # A raw prompt gets the special tokens (BOS) the model's tokenizer adds.
        return prompt, self.vocabulary.encode(prompt, add_special_tokens=True)

    def _render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        return str(
            self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tools=tools or None
            )
        )

    def _is_token(self, text: str) -> bool:
        return len(self.vocabulary.encode(text, add_special_tokens=False)) == 1

    def _budget(self, prompt_tokens: int, wanted: int, shortest_answer: str | None) -> int:
        """The new tokens a request may generate: what it asked for, within the context."""
        budget = wanted
        if self.context_length is not None:
            room = self.context_length - prompt_tokens
            if room <= 0:
                raise RequestRefused(
                    "context_length_exceeded",
                    f"This model's maximum context length is {self.context_length} tokens; "
                    f"the prompt takes {prompt_tokens}",
                )
            budget = min(wanted, room)
        if shortest_answer is not None:
            needed = len(self.vocabulary.encode(shortest_answer, False)) + 1  # and the end token
            if needed > budget:
                what = f"max_tokens {wanted}" if budget == wanted else f"the {budget} tokens left"
                raise RequestRefused(
                    "max_tokens_too_small",
                    f"{what} is too small: the shortest answer that fits the schema takes "
                    f"{needed} tokens",
                )
        return budget

    def cancel(self, rid: int) -> Result | None:
        request = self._active.pop(rid, None)
        if request is None:
            return None
        for sequence in request.running:
            sequence.handle.cancel()
        return Output(rid, "", request.tokens, "cancelled")

    def cancel_all(self) -> list[Result]:
        return [out for rid in list(self._active) if (out := self.cancel(rid)) is not None]

    def fail_all(self, error: str) -> list[Result]:
        outputs: list[Result] = [
            Output(r.rid, "", r.tokens, "error", error) for r in self._active.values()
        ]
        self._active.clear()
        return outputs

    def step(self) -> list[Result]:
        """One pipeline step. An exception here means the pipeline is broken."""
        faults.check("step")
        faults.check_poison(rids=self._active)
        self._pipe.step()
        faults.check("read")
        sequences = [s for request in self._active.values() for s in request.running]
        windows: list[list[int]] = []
        slots: list[tuple[int, int] | None] = []
        news: list[tuple[list[float], list[PromptLogprob] | None]] = []
        for sequence in sequences:
            outputs = sequence.handle.read() if sequence.handle.can_read() else {}
            output = next(iter(outputs.values()), None)  # one sequence per GenAI request
            if output is None:
                slots.append(None)
                news.append(([], None))
                continue
            ids, logprobs = list(output.generated_ids), list(output.generated_log_probs)
            echoed = None
            if sequence.echoed:
                echoed = self._echoed(sequence, ids[: sequence.echoed], logprobs[: sequence.echoed])
                ids, logprobs = ids[sequence.echoed :], logprobs[sequence.echoed :]
                sequence.echoed = 0
            self._drafts.count(sequence.tokens, len(ids), sequence.budget)
            sequence.tokens += len(ids)
            sequence.last_finish = output.finish_reason
            new_windows = sequence.detokenizer.windows(ids)
            slots.append((len(windows), len(new_windows)))
            news.append((logprobs, echoed))
            windows += new_windows
        faults.check("detokenize")
        # One batched decode for every request's windows: each decode call is an inference
        # of the detokenizer model, whose fixed cost dwarfs its cost per token.
        texts = decode_windows(self._tokenizer, windows)
        results: list[Result] = []
        for sequence, slot, (logprobs, echoed) in zip(sequences, slots, news, strict=True):
            if sequence.rid not in self._active:
                continue  # a sibling choice failed, and the request with it
            pieces = (
                [] if slot is None else sequence.detokenizer.advance(texts[slot[0] : sum(slot)])
            )
            if sequence.logprobs is not None:
                sequence.logprobs.push(pieces, logprobs)
            result = self._collect(sequence, "".join(pieces), echoed)
            if result is not None:
                results.append(result)
        return results

    def _echoed(
        self, sequence: _Sequence, ids: list[int], logprobs: list[float]
    ) -> list[PromptLogprob] | None:
        """The prompt's tokens as logprobs show them; the first token has no probability."""
        if sequence.logprobs is None:
            return None
        texts = token_texts(self._tokenizer, ids)
        return [
            (text, None if index == 0 else logprob)
            for index, (text, logprob) in enumerate(zip(texts, logprobs, strict=True))
        ]

    def _collect(
        self, sequence: _Sequence, delta: str, echoed: list[PromptLogprob] | None
    ) -> Output | None:
        handle = sequence.handle
        new_text, stopped = sequence.stop.push(delta) if delta else ("", False)
        status = handle.get_status()
        if stopped:
            handle.stop()
            return self._finish(sequence, "stop", new_text, echoed, cut=True)
        if status == og.GenerationStatus.RUNNING:
            if not new_text and echoed is None:
                return None
            logprobs = sequence.logprobs.release(new_text) if sequence.logprobs else None
            return Output(
                sequence.rid,
                new_text,
                self._active[sequence.rid].tokens,
                logprobs=logprobs,
                prompt_logprobs=echoed,
                index=sequence.index,
            )
        if status in (og.GenerationStatus.FINISHED, og.GenerationStatus.STOP):
            tail, stopped = sequence.stop.push(sequence.detokenizer.flush())
            if not stopped:
                tail += sequence.stop.flush()
            reason: EngineFinish = (
                "length" if sequence.last_finish == og.GenerationFinishReason.LENGTH else "stop"
            )
            text = new_text + tail
            return self._finish(sequence, "stop" if stopped else reason, text, echoed, cut=stopped)
        return self._finish(
            sequence, "error", new_text, echoed, f"generation {status.name.lower()}"
        )

    def _finish(
        self,
        sequence: _Sequence,
        reason: EngineFinish,
        text: str,
        echoed: list[PromptLogprob] | None,
        error: str | None = None,
        *,
        cut: bool = False,
    ) -> Output:
        """The choice's last output. ``cut``: a stop sequence cut the text, and the tokens
        past the cut are not reported. A failed choice fails its whole request."""
        sequence.finished = True
        request = self._active[sequence.rid]
        if reason == "error":
            for sibling in request.running:
                sibling.handle.cancel()
        if reason == "error" or not request.running:
            del self._active[sequence.rid]
        logprobs: list[TokenLogprob] | None = None
        if sequence.logprobs is not None:
            logprobs = sequence.logprobs.release(text)
            if not cut:
                logprobs += sequence.logprobs.rest()
        return Output(
            sequence.rid,
            text,
            request.tokens,
            reason,
            error,
            logprobs=logprobs,
            prompt_logprobs=echoed,
            index=sequence.index,
            stop=sequence.stop.met if cut else None,
        )
