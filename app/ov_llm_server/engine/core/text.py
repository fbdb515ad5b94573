"""Token ids to text, and stop sequences, inside the engine process."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from ..messages import TokenLogprob


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text: one delta per call, or one piece per token.

    Decoding a short window ending at the newest token (instead of each token alone) keeps
    multi-byte characters and tokenizer-specific spacing intact; a trailing U+FFFD means a
    character is still incomplete and is held back. Per token, a token that ends inside a
    character gets an empty piece and the token that completes it the whole character, so
    the pieces always add up to the text.
    """

    def __init__(
        self, tokenizer: Any, *, per_token: bool = False, whole_characters: bool = False
    ) -> None:
        self._tokenizer = tokenizer
        self._per_token = per_token
        # Grammar-constrained output ends in whole characters: a character the budget cut
        # half-way is no text of the grammar's, and the server closes the document after it.
        self._whole_characters = whole_characters
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self._ends: list[int] = []

    def windows(self, ids: Sequence[int]) -> list[list[int]]:
        """Takes new ids; returns the windows whose texts :meth:`advance` needs: the text
        read so far, then the text up to each new token (per token) or up to the last."""
        start = len(self._ids)
        self._ids.extend(ids)
        end = len(self._ids)
        self._ends = list(range(start + 1, end + 1)) if self._per_token else [end]
        read = self._ids[self._prefix : self._read]
        return [read] + [self._ids[self._prefix : stop] for stop in self._ends]

    def advance(self, texts: Sequence[str]) -> list[str]:
        """The new text up to each end :meth:`windows` gave, from those windows' texts."""
        base, pieces, read = texts[0], [], None
        for end, text in zip(self._ends, texts[1:], strict=True):
            if len(text) > len(base) and not text.endswith("\ufffd"):
                pieces.append(text[len(base) :])
                base, read = text, end
            else:
                pieces.append("")
        if read is not None:
            self._prefix, self._read = self._read, read
        return pieces

    def flush(self) -> str:
        """The rest of the text at the end, an incomplete character included (as U+FFFD)
        unless ``whole_characters``."""
        windows = (self._ids[self._prefix : self._read], self._ids[self._prefix :])
        read, full = (str(self._tokenizer.decode(w)) if w else "" for w in windows)
        self._prefix = self._read = len(self._ids)
        rest = full[len(read) :]
        return rest.rstrip("\ufffd") if self._whole_characters else rest


def decode_windows(tokenizer: Any, windows: Sequence[Sequence[int]]) -> list[str]:
    """The texts of many windows in one batched decode call: each call is an inference of the
    detokenizer model, whose fixed cost dwarfs its cost per token."""
    texts = [""] * len(windows)
    todo = [i for i, window in enumerate(windows) if window]
    if todo:
        decoded = tokenizer.decode([list(windows[i]) for i in todo])
        for i, text in zip(todo, decoded, strict=True):
            texts[i] = str(text)
    return texts


def token_texts(tokenizer: Any, ids: Sequence[int], chunk: int = 16) -> list[str]:
    """Each token's own text (a prompt's, for echoed log probabilities), a chunk of tokens per
    decode call, so that no window grows with the prompt."""
    detokenizer = IncrementalDetokenizer(tokenizer, per_token=True)
    pieces: list[str] = []
    for start in range(0, len(ids), chunk):
        windows = detokenizer.windows(ids[start : start + chunk])
        pieces += detokenizer.advance(decode_windows(tokenizer, windows))
    if pieces:
        pieces[-1] += detokenizer.flush()
    return pieces


class TokenLogprobs:
    """One request's token log probabilities, each held until the text it belongs to is sent.

    A stop sequence cuts the text, and the tokens past the cut go with it; what the stop
    matcher holds back, this holds back too. A token's start in the answer's text decides.
    """

    def __init__(self) -> None:
        self._held: deque[tuple[int, str, float]] = deque()
        self._chars = 0  # the texts of every token so far
        self._sent = 0  # the answer's text sent so far

    def push(self, pieces: Sequence[str], logprobs: Sequence[float]) -> None:
        for piece, logprob in zip(pieces, logprobs, strict=True):
            self._held.append((self._chars, piece, logprob))
            self._chars += len(piece)

    def release(self, sent: str) -> list[TokenLogprob]:
        """The tokens whose text starts within what has now been sent (``sent`` added)."""
        self._sent += len(sent)
        out: list[TokenLogprob] = []
        while self._held and self._held[0][0] < self._sent:
            _, piece, logprob = self._held.popleft()
            out.append((piece, logprob))
        return out

    def rest(self) -> list[TokenLogprob]:
        """Every token still held: the answer ended without a stop sequence."""
        out: list[TokenLogprob] = [(piece, lp) for _, piece, lp in self._held]
        self._held.clear()
        return out


class StopMatcher:
    """Finds stop sequences in streamed text, holding back what could start one.

    Only the held-back tail is kept: text already emitted cannot be part of a match,
    because its longest suffix that begins a stop sequence was held back with it. Each stop
    keeps how much of it the text ends with (a KMP automaton), so a token costs its own
    length per stop, not the square of the stop's length.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [_Stop(s) for s in stops if s]
        self._held = ""
        self.met: str | None = None  # the stop sequence found (the first in the text)

    def push(self, delta: str) -> tuple[str, bool]:
        """Returns the text safe to emit now and whether a stop sequence was met."""
        if not self._stops:
            return delta, False
        text = self._held + delta
        # The held tail is shorter than the longest stop, so this search is linear too.
        hits = [(i, stop.text) for stop in self._stops if (i := text.find(stop.text)) >= 0]
        if hits:
            self._held = ""
            at, self.met = min(hits, key=lambda hit: hit[0])
            return text[:at], True
        hold = max(stop.feed(delta) for stop in self._stops)
        self._held = text[len(text) - hold :]
        return text[: len(text) - hold], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class _Stop:
    """One stop sequence and the length of its longest start the text so far ends with."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.matched = 0
        # fail[i]: the longest proper border of text[: i + 1] (KMP's failure function).
        self._fail = [0] * len(text)
        k = 0
        for i in range(1, len(text)):
            while k and text[i] != text[k]:
                k = self._fail[k - 1]
            if text[i] == text[k]:
                k += 1
            self._fail[i] = k

    def feed(self, delta: str) -> int:
        """Reads ``delta`` (in which the whole stop does not occur); the new ``matched``."""
        text, fail, k = self.text, self._fail, self.matched
        for ch in delta:
            while k and ch != text[k]:
                k = fail[k - 1]
            if ch == text[k]:
                k += 1
        self.matched = k
        return k
