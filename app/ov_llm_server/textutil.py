"""Small text helpers shared by both processes: partial tag matching, one-line messages."""

from __future__ import annotations


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``.

    What a streaming matcher must hold back: it may become ``tag`` with the next text.
    """
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (GenAI's messages run over many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
