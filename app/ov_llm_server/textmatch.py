"""Matching tags and stop sequences in text that arrives in pieces."""

from __future__ import annotations


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``.

    What a streaming matcher must hold back: it may become ``tag`` with the next text.
    """
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
