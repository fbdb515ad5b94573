"""Small text helpers shared by both processes: partial tag matching, one-line messages,
client text in log lines."""

from __future__ import annotations

import json


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


def log_value(text: str) -> str:
    """A client's text as one ``key=value`` value of a log line: as is when it is a plain
    word, else quoted with JSON's escapes, so that no client text can end the line or pass
    for another field (``model=x status=200``)."""
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return json.dumps(text)
