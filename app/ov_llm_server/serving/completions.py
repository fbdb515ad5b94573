"""``POST /v1/completions``: a raw prompt continued, as ``text_completion`` or its chunks.

The same generation path as chat (the engine takes the prompt instead of messages), with
the legacy surface: ``echo`` (the prompt first; with ``max_tokens`` 0 only the prompt,
scored), ``suffix`` (fill-in-the-middle, for models with its tokens) and ``logprobs: 0``
(the chosen tokens' log probabilities; GenAI gives no alternatives, so more is refused).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .. import errors
from ..engine.messages import Generate, Output, PromptLogprob
from ..model_manager import LoadedModel
from ..protocol_surface import CompletionRequest
from .common import Record
from .generation import GenerationService, GenerationWork, sampling


class CompletionService(GenerationService):
    endpoint = "/v1/completions"
    log_name = "text_completion"
    id_prefix = "cmpl"
    prompt_param = "prompt"
    refusal_params: ClassVar[dict[str, str]] = {
        "max_tokens_too_small": "max_tokens",
        "fim_unsupported": "suffix",
    }

    def check(self, body: Any) -> None:
        assert isinstance(body, CompletionRequest)
        prompts = body.prompts()
        if len(prompts) != 1:
            raise errors.bad_request(
                f"'prompt' holds {len(prompts)} prompts; this server completes one prompt "
                "per request",
                param="prompt",
                code="unsupported_value",
            )
        if body.logprobs:
            raise errors.bad_request(
                "logprobs must be 0: OpenVINO GenAI gives the chosen token's log probability "
                "only, no alternatives",
                param="logprobs",
                code="unsupported_value",
            )
        if body.echo and not isinstance(prompts[0], str):
            raise errors.bad_request(
                "echo needs a text prompt: this server does not echo token-id prompts",
                param="echo",
                code="unsupported_value",
            )
        super().check(body)

    def work(self, body: Any, model: LoadedModel) -> GenerationWork:
        assert isinstance(body, CompletionRequest)
        prompt = body.prompts()[0]
        max_new = self.settings.default_max_tokens if body.max_tokens is None else body.max_tokens
        logprobs = body.logprobs is not None
        params = sampling(body, max_new, body.stops(), logprobs=logprobs, echo=body.echo)

        def build(rid: int) -> Generate:
            if isinstance(prompt, str):
                return Generate(rid, params, prompt=prompt, suffix=body.suffix)
            return Generate(rid, params, prompt_ids=prompt, suffix=body.suffix)

        def answer(accepted: Output) -> CompletionAnswer:
            echo = prompt if body.echo and isinstance(prompt, str) else None
            return CompletionAnswer(echo, logprobs)

        return build, answer


class CompletionAnswer:
    """Completion texts; with ``echo`` the prompt comes first, with its log probabilities."""

    chunk_object: ClassVar[str] = "text_completion"
    done = False  # no parser decides the answer is whole: the engine does

    def __init__(self, echo: str | None, logprobs: bool) -> None:
        self._echo = echo
        self._text: list[str] = []
        self._logprobs: dict[str, Any] | None = _empty_logprobs() if logprobs else None
        self._offset = 0  # where the next token starts in the choice's text
        self._stop: str | None = None  # the stop sequence that ended the text

    def opening(self) -> list[dict[str, Any]]:
        return []

    def feed(self, output: Output, last: bool) -> list[dict[str, Any]]:
        text = output.text
        if last:
            self._stop = output.stop
        entries: list[PromptLogprob] = []
        if self._echo is not None:
            entries += output.prompt_logprobs or []
            text = self._echo + text
        logprobs = None
        if self._logprobs is not None:
            logprobs = self._entries(entries, output)
            for key in _LISTS:
                self._logprobs[key] += logprobs[key]
        self._echo = None
        self._text.append(text)
        if not text and not (logprobs and logprobs["tokens"]):
            return []
        return [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": None}]

    def _entries(self, prompt: list[PromptLogprob], output: Output) -> dict[str, Any]:
        """OpenAI's parallel lists for the prompt's (echo) and the new tokens."""
        out = _empty_logprobs()
        if self._echo is not None:
            offset = 0
            for token, logprob in prompt:
                out["tokens"].append(token)
                out["token_logprobs"].append(logprob)
                out["text_offset"].append(offset)
                offset += len(token)
            self._offset = len(self._echo)
        for token, logprob in output.logprobs or []:
            out["tokens"].append(token)
            out["token_logprobs"].append(logprob)
            out["text_offset"].append(self._offset)
            self._offset += len(token)
        return out

    def finish_reason(self, engine_finish: str) -> str:
        return engine_finish

    def closing(self, finish: str) -> dict[str, Any]:
        return {
            "index": 0,
            "text": "",
            "logprobs": None,
            "finish_reason": finish,
            **self._stopped(),
        }

    def body(self, record: Record, finish: str) -> dict[str, Any]:
        choice = {
            "index": 0,
            "text": "".join(self._text),
            "logprobs": self._logprobs,
            "finish_reason": finish,
            **self._stopped(),
        }
        return {
            "id": record.completion_id,
            "object": "text_completion",
            "created": record.created,
            "model": record.model,
            "choices": [choice],
            "usage": record.usage().model_dump(),
        }

    def _stopped(self) -> dict[str, str]:
        """vLLM's ``stop_reason``: the stop sequence that ended the text, if one did."""
        return {"stop_reason": self._stop} if self._stop is not None else {}


_LISTS = ("tokens", "token_logprobs", "text_offset")


def _empty_logprobs() -> dict[str, Any]:
    # top_logprobs: no alternatives (GenAI computes the chosen token's probability only).
    return {"tokens": [], "token_logprobs": [], "top_logprobs": None, "text_offset": []}
