"""What every tool-call format shares: the request's tools, and the format's own interface."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from ...textutil import log_value
from ..deltas import OutputParser, ParsedToolCall
from ..schema import SchemaModel, repair, validate
from ..terms import Lit, Term, seq

log = logging.getLogger(__name__)


class ToolCatalog:
    """The tools a call may use: their names and the models of their parameter schemas.

    ``repair`` is on for calls the grammar forced: their arguments only need the cuts the
    grammar could not make (``maxLength``); free calls are validated as written.
    """

    def __init__(
        self,
        models: dict[str, SchemaModel],
        *,
        repair: bool = False,
        new_id: Any = None,
    ) -> None:
        self.models = models
        self._repair = repair
        self._new_id = new_id or (lambda: f"call_{uuid.uuid4().hex[:24]}")
        self._next_index = 0

    def make_call(self, payload: Any, *, args_key: str = "arguments") -> ParsedToolCall | None:
        """A call from decoded JSON, or None when it is not a valid call of a known tool."""
        if not isinstance(payload, dict):
            return None
        name = payload.get("name")
        if not isinstance(name, str) or name not in self.models:
            return None
        present = [k for k in (args_key, "arguments", "parameters") if k in payload]
        arguments: Any = payload[present[0]] if present else {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        model = self.models[name]
        if self._repair:
            arguments = repair(model, arguments)
        problem = validate(model, arguments)
        if problem is not None:
            log.info(
                "tool call %s returned as text: arguments %s", log_value(name), log_value(problem)
            )
            return None
        call = ParsedToolCall(
            index=self._next_index,
            id=self._new_id(),
            name=name,
            arguments=json.dumps(arguments, ensure_ascii=False),
        )
        self._next_index += 1
        return call

    def make_calls(
        self, payloads: list[Any], *, args_key: str = "arguments"
    ) -> list[ParsedToolCall]:
        """All payloads as calls, or [] (and no index used up) if any of them is not valid."""
        first = self._next_index
        calls = [self.make_call(p, args_key=args_key) for p in payloads]
        valid = [c for c in calls if c is not None]
        if len(valid) != len(calls):
            self._next_index = first
            return []
        return valid


class ToolFormat:
    """One way models write tool calls: how to find it, parse it, and force it.

    A subclass is one module in this package, registered with ``@register("name")``.
    """

    name: ClassVar[str] = ""
    priority: ClassVar[int] = 0  # detection order (lower first); 0: never detected
    args_key: ClassVar[str] = "arguments"
    # The format forced calls are written in when this one cannot be built by the grammar
    # (its arguments are not JSON): a layout of the same family, read by that format's parser.
    forced_as: ClassVar[str | None] = None

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return False

    @classmethod
    def new_id(cls) -> str:
        return f"call_{uuid.uuid4().hex[:24]}"

    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        """A parser of free output; ``limit`` calls at most (then it is ``done``)."""
        raise NotImplementedError

    @classmethod
    def call_term(cls, name: str, arguments: Term) -> Term:
        """One call as the format writes it, for the grammar of a forced call."""
        head = Lit(f'{{"name": {json.dumps(name, ensure_ascii=False)}, "{cls.args_key}": ')
        return seq(head, arguments, Lit("}"))

    @classmethod
    def forced(cls, calls: Sequence[tuple[str, Term]], several: bool) -> Term:
        """The whole forced answer: one call (or, when ``several``, one or more)."""
        raise NotImplementedError

    @classmethod
    def call_head(cls) -> re.Pattern[str]:
        """What comes before a forced call's arguments (as :meth:`call_term` writes it)."""
        return re.compile(r'\{"name": ("(?:[^"\\]|\\.)*"), "' + re.escape(cls.args_key) + '": ')

    @classmethod
    def call_name(cls, head: re.Match[str]) -> str:
        return str(json.loads(head.group(1)))
