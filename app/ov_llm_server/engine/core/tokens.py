"""``/tokenize`` and ``/detokenize`` on a model's own tokenizer, for every kind of engine.

They run between pipeline steps, in the engine's loop: a tokenizer call takes a
millisecond or two, and the tokenizer lives here (the HTTP process never loads one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...textutil import one_line
from ..messages import Detokenize, Detokenized, Refused, Reply, Tokenize, Tokenized

# Renders chat messages with the model's template: (messages, add_generation_prompt) -> text.
Render = Callable[[list[dict[str, Any]], bool], str]


class Vocabulary:
    """Token ids and texts on one GenAI tokenizer; ``render`` is None without a chat template."""

    def __init__(self, tokenizer: Any, render: Render | None = None) -> None:
        self._tokenizer = tokenizer
        self._render = render
        self._strings: list[str] | None = None

    @property
    def strings(self) -> list[str]:
        """Each id's vocabulary entry (``Ġthe``, ``##ing``, ``<0xE2>``), read once when asked."""
        if self._strings is None:
            vocab: dict[bytes, int] = self._tokenizer.get_vocab()
            strings = [""] * (max(vocab.values(), default=-1) + 1)
            for entry, index in vocab.items():
                strings[index] = entry.decode("utf-8", errors="replace")
            self._strings = strings
        return self._strings

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        encoded = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return [int(i) for i in encoded.input_ids.data[0]]

    def tokenize(self, message: Tokenize) -> Reply:
        text = message.prompt or ""
        if message.messages is not None:
            if self._render is None:
                return Refused(
                    message.rid,
                    "this model has no chat template: tokenize a 'prompt' instead",
                    code="invalid_value",
                    param="messages",
                )
            try:
                text = self._render(message.messages, message.add_generation_prompt)
            except Exception as exc:  # genai raises RuntimeError with the Jinja message
                return Refused(
                    message.rid,
                    f"The model's chat template cannot render these messages: {one_line(exc)}",
                    code="template_error",
                    param="messages",
                )
        ids = self.encode(text, message.add_special_tokens)
        strs = [self.strings[i] if i < len(self.strings) else "" for i in ids]
        return Tokenized(message.rid, ids, strs if message.token_strs else None)

    def detokenize(self, message: Detokenize) -> Reply:
        size = len(self.strings)
        bad = next((i for i in message.tokens if not 0 <= i < size), None)
        if bad is not None:
            return Refused(
                message.rid,
                f"token id {bad} is outside this model's vocabulary (0 to {size - 1})",
                code="invalid_value",
                param="tokens",
            )
        # Special tokens stay: detokenizing what /tokenize gave returns the text it was given.
        text = self._tokenizer.decode(message.tokens, skip_special_tokens=False)
        return Detokenized(message.rid, str(text))
