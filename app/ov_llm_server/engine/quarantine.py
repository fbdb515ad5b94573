"""Requests suspected of crashing their model's engine, refused instead of sent again.

Runs in the HTTP process, one per supervised model. A request that breaks the pipeline
kills the engine and every request on it; a router then retries it, and it kills the fresh
engine too: a crash loop. So every request is known by a fingerprint (a hash of what it
asks the engine, its request id left out), and each engine death gives the requests it hit a
strike: the ones of the pipeline call that raised, when the engine said which (a lone one
of them takes both strikes at once), else every request in flight. Two strikes and the
request is refused with ``400 poison_request``. Bounded: the oldest fingerprints are
forgotten first.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Collection

import msgspec

from .messages import Detokenize, Embed, Generate, Rerank, Tokenize, Transcribe, Work, encoder

log = logging.getLogger(__name__)

STRIKES = 2
REMEMBERED = 1024


def fingerprint(message: Generate | Work) -> bytes:
    """The same for every send of the same request, whatever its request id."""
    return hashlib.blake2b(
        encoder.encode(msgspec.structs.replace(message, rid=0)), digest_size=16
    ).digest()


def param_of(message: Generate | Work) -> str:
    """The request field a refusal names."""
    if isinstance(message, Generate):
        return "messages" if message.messages is not None else "prompt"
    if isinstance(message, Embed):
        return "input"
    if isinstance(message, Rerank):
        return "documents"
    if isinstance(message, Transcribe):
        return "file"
    if isinstance(message, Tokenize):
        return "messages" if message.messages is not None else "prompt"
    assert isinstance(message, Detokenize)
    return "tokens"


class Quarantine:
    def __init__(self, name: str, remembered: int = REMEMBERED) -> None:
        self.name = name
        self._strikes: OrderedDict[bytes, int] = OrderedDict()
        self._remembered = remembered

    def refusal(self, print_: bytes) -> str | None:
        """Why a request is refused, or None if it may go to the engine."""
        if self._strikes.get(print_, 0) < STRIKES:
            return None
        return (
            f"This request was being served by model '{self.name}' when its engine crashed "
            "(twice, or as the only request of the pipeline call that failed); it is refused "
            "so that it cannot crash the engine again. Change the request, or report it to "
            "the operator"
        )

    def strike(self, prints: Collection[bytes], *, named: bool) -> None:
        """One engine death. ``named``: the engine named these as the requests of its failed
        call (a lone one is convicted at once); else they were only in flight."""
        distinct = set(prints)
        weight = STRIKES if named and len(distinct) == 1 else 1
        for print_ in distinct:
            strikes = self._strikes.pop(print_, 0) + weight
            self._strikes[print_] = strikes
            if strikes - weight < STRIKES <= strikes:
                log.warning(
                    "model %s: request %s was hit by %s; it is refused from now on",
                    self.name,
                    print_.hex()[:12],
                    "the failed call alone" if weight == STRIKES else f"{strikes} engine deaths",
                )
        while len(self._strikes) > self._remembered:
            self._strikes.popitem(last=False)

    def clear(self) -> None:
        self._strikes.clear()
