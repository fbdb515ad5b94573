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
    """An exception's message on one line. OpenVINO's start with the source location
    ("Exception from src/.../core.cpp:117:"); the message proper is their last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Exception from") and len(lines) > 1:
        return lines[-1]
    return lines[0]
