"""What working on a client's schema may cost, and the error that refuses a schema.

A schema is small on the wire but may describe an exponential amount of work: ``$ref``s
shared by many parts, ``anyOf`` inside ``anyOf``, an ``enum`` checked against both. Every
walk over a schema, and over output checked against one, spends from a :class:`Budget`;
the steps bound the work however the schema is shaped, and the deadline bounds the wall
time of compiling a request's whole output plan (schemas, grammar, shortest answer).
"""

from __future__ import annotations

import time

# Steps one request's schemas may take to compile (node visits, merges, checks of an enum
# value): real schemas take a few thousand; this is about a quarter of a second of Python.
COMPILE_STEPS = 200_000
# Steps one check of output against a schema may take. Output is at most max_tokens long,
# so checking it is linear in that unless the schema makes it branch.
CHECK_STEPS = 100_000


class SchemaError(ValueError):
    """The schema cannot be used; ``keyword`` names the culprit for the client."""

    def __init__(self, message: str, keyword: str | None = None, path: str = "") -> None:
        where = f" at {path}" if path else ""
        super().__init__(f"{message}{where}")
        self.keyword = keyword
        self.path = path


class TooComplex(SchemaError):
    """The budget ran out: the schema (or the output under it) is too costly to work on."""


class Budget:
    """Steps left, and an optional deadline (``time.monotonic()`` seconds)."""

    def __init__(self, steps: int, seconds: float | None = None) -> None:
        self.steps = steps
        self.spent = 0
        self.seconds = seconds
        self._deadline = None if seconds is None else time.monotonic() + seconds

    def spend(self, steps: int = 1, path: str = "") -> None:
        self.spent += steps
        if self.spent > self.steps:
            raise TooComplex(
                f"schema is too complex (it needs more than {self.steps} steps of work)",
                None,
                path,
            )
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TooComplex(
                f"schema is too complex (compiling it took more than {self.seconds:g} s)",
                None,
                path,
            )
