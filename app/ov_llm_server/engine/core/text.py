"""Token ids to text, and stop sequences, inside the engine process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...textutil import partial_suffix


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
