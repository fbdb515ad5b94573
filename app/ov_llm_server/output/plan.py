"""What the model must produce for one request: free text, a forced tool call, or a schema.

The one place that reads ``tools``, ``tool_choice``, ``parallel_tool_calls`` and
``response_format``. It refuses what cannot be honoured (400s) before any generation, and
gives the server the grammar, the tools for the chat template and the output parser.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import errors
from ..protocol import ChatCompletionRequest, NamedToolChoice, ToolDefinition
from ..registry import ModelEntry
from . import length_cut, parsers
from .budget import COMPILE_STEPS, Budget, TooComplex
from .compose import ChainedParser, ClosingParser, DocumentParser
from .deltas import OutputParser
from .grammar import JsonGrammar
from .reasoning import THINK_OPEN, ThinkParser
from .schema import SchemaError, SchemaModel, compile_schema, needs_repair
from .streamed_calls import ArgumentReader, StreamedCallParser
from .terms import Grammar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputPlan:
    grammar: str | None  # EBNF for og.StructuredOutputConfig(grammar=...)
    template_tools: list[dict[str, Any]] | None  # the tools the chat template shows the model
    _make_parser: Callable[[str], OutputParser]
    # The shortest answer the grammar allows. The engine, which holds the tokenizer, refuses
    # the request (400 max_tokens_too_small) unless it and the end token fit the budget.
    shortest_answer: str | None = None

    def parser(self, prompt: str) -> OutputParser:
        """A fresh parser for one response; ``prompt`` is the rendered chat prompt."""
        return self._make_parser(prompt)


def plan_output(
    request: ChatCompletionRequest,
    chat_template: str,
    entry: ModelEntry | None,
    *,
    compile_seconds: float | None = None,
) -> OutputPlan:
    """The plan for ``request``; raises :class:`errors.APIError` (400) for what cannot be done.

    Compiling the request's schemas spends one budget of :data:`COMPILE_STEPS`, and
    ``compile_seconds`` at most: past either the schema is refused as too complex. The
    caller runs this off the event loop; what was compiled is reused for the same schemas.
    """
    budget = Budget(COMPILE_STEPS, compile_seconds)
    check_tool_choice(request)
    tools_shown = bool(request.tools) and request.tool_choice != "none"
    template_tools = (
        [tool.model_dump(exclude_none=True) for tool in request.tools or []]
        if tools_shown
        else None
    )
    fmt_name = tool_format(chat_template, entry)
    if forces_tool_call(request):
        # A model without a format of its own writes plain JSON calls; a format the grammar
        # cannot build is forced in its family's JSON layout.
        forced = fmt_name if fmt_name not in (None, "none") else parsers.FORCED_DEFAULT
        forced = parsers.get(forced).forced_as or forced
        return _forced_call(request, forced, template_tools, budget)
    spec = request.response_format
    if spec is not None and spec.type != "text":
        return _schema(request, template_tools, budget)
    reasoning_on = (entry.reasoning_parser if entry else None) != "none"
    fmt = parsers.get(parsers.DEFAULT if fmt_name in (None, "none") else fmt_name)
    catalog = None
    if tools_shown and fmt_name != "none":
        catalog = _catalog(request.tools or [], fmt, budget, repair=False)
    # parallel_tool_calls false: the first call is the answer, generation may stop there.
    limit = 1 if request.parallel_tool_calls is False else None

    def free(prompt: str) -> OutputParser:
        # Only an answer that starts with <think> (or a prompt that opened it) has reasoning.
        opened = prompt.rstrip().endswith(THINK_OPEN)
        reasoning = ThinkParser(opened=opened) if reasoning_on else None
        tool_parser = fmt.parser(catalog.fresh(), limit) if catalog is not None else None
        if reasoning is None and tool_parser is None:
            return OutputParser()
        return ChainedParser(reasoning, tool_parser)

    return OutputPlan(None, template_tools, free)


def tool_format(chat_template: str, entry: ModelEntry | None) -> str | None:
    """The registry entry's ``tool_parser``, else the format the chat template teaches."""
    name = entry.tool_parser if entry else None
    if name is None:
        return parsers.detect(chat_template)
    if name != "none" and name not in parsers.names():
        log.warning("unknown tool_parser %r in the registry; detecting from the template", name)
        return parsers.detect(chat_template)
    return name


def check_tool_choice(request: ChatCompletionRequest) -> None:
    """400 for a tool_choice that cannot be honoured."""
    choice = request.tool_choice
    if choice in (None, "none", "auto"):
        return
    if not request.tools:
        raise errors.bad_request(
            "tool_choice requires 'tools'", param="tool_choice", code="invalid_value"
        )
    if isinstance(choice, NamedToolChoice):
        names = [tool.function.name for tool in request.tools]
        if choice.function.name not in names:
            raise errors.bad_request(
                f"tool_choice names function '{choice.function.name}', which is not in "
                f"tools ({', '.join(names)})",
                param="tool_choice",
                code="invalid_value",
            )


def forces_tool_call(request: ChatCompletionRequest) -> bool:
    choice = request.tool_choice
    return bool(request.tools) and (choice == "required" or isinstance(choice, NamedToolChoice))


def chosen_tools(request: ChatCompletionRequest) -> list[ToolDefinition]:
    """The tools a forced call may use: the named one, or all for "required"."""
    tools = request.tools or []
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        return [t for t in tools if t.function.name == choice.function.name]
    return list(tools)


def several_forced_calls(request: ChatCompletionRequest) -> bool:
    """Whether a forced answer may hold more than one call.

    Only when the client asked for parallel calls explicitly: a small model given the room
    repeats the same call until max_tokens, and OpenAI's default (parallel allowed) is sent
    by clients that want one call far more often than by ones that want several.
    """
    return (
        request.parallel_tool_calls
        and "parallel_tool_calls" in request.model_fields_set
        and not isinstance(request.tool_choice, NamedToolChoice)
    )


# ---------------------------------------------------------------- constrained answers


def _forced_call(
    request: ChatCompletionRequest,
    fmt_name: str,
    template_tools: list[dict[str, Any]] | None,
    budget: Budget,
) -> OutputPlan:
    fmt = parsers.get(fmt_name)
    tools = chosen_tools(request)
    several = several_forced_calls(request)

    def build() -> tuple[_Catalog, Grammar, str, str]:
        catalog = _catalog(tools, fmt, budget, repair=True)
        try:
            builder = JsonGrammar(budget)
            calls = [(name, builder.model(model)) for name, model in catalog.models.items()]
            grammar = builder.grammar(fmt.forced(calls, several))
        except SchemaError as exc:
            raise _schema_error(exc, "tools", "a tool's parameters") from exc
        return catalog, grammar, grammar.ebnf(), _shortest(grammar)

    key = ("forced", fmt_name, several, _tool_schemas(tools))
    catalog, grammar, ebnf, shortest = _COMPILED.get(key, build)
    _check_sampling(request)

    # A maxLength is cut as the arguments stream, unless the string's node is only known
    # once the call is whole (under an anyOf): then schema.repair cuts the whole call.
    stream = all(length_cut.streams(model) for model in catalog.models.values())

    def parser(_: str) -> OutputParser:
        # The grammar holds the answer from its first token: there is no room for thinking.
        inner = fmt.parser(catalog.fresh(), None if several else 1)
        if not stream:
            return ClosingParser(grammar, inner)
        only = next(iter(catalog.models)) if len(catalog.models) == 1 else None
        reader = ArgumentReader(fmt.call_head(), fmt.call_name, only, catalog.models)
        return StreamedCallParser(grammar, inner, reader, fmt.new_id)

    return OutputPlan(ebnf, template_tools, parser, shortest)


def _schema(
    request: ChatCompletionRequest,
    template_tools: list[dict[str, Any]] | None,
    budget: Budget,
) -> OutputPlan:
    spec = request.response_format
    assert spec is not None
    if spec.type == "json_object":
        schema: Any = {"type": "object"}
    elif spec.json_schema is None or spec.json_schema.schema_ is None:
        raise errors.bad_request(
            "response_format json_schema needs a 'schema'", param="response_format"
        )
    else:
        schema = spec.json_schema.schema_

    def build() -> tuple[SchemaModel, Grammar, str, str, bool, bool]:
        try:
            builder = JsonGrammar(budget)
            model = compile_schema(schema, budget)
            grammar = builder.grammar(builder.model(model))
        except SchemaError as exc:
            raise _schema_error(exc, "response_format", "the response_format schema") from exc
        cut = needs_repair(model)
        hold = cut and not length_cut.streams(model)
        return model, grammar, grammar.ebnf(), _shortest(grammar), cut and not hold, hold

    model, grammar, ebnf, shortest, cut, hold = _COMPILED.get(("response_format", schema), build)
    _check_sampling(request)

    def parser(_: str) -> OutputParser:
        return DocumentParser(
            grammar, model, hold=hold, cut=length_cut.LengthCut(model) if cut else None
        )

    return OutputPlan(ebnf, template_tools, parser, shortest)


class _Catalog:
    """The compiled parameter schemas of some tools; ``fresh()`` gives one response's catalog."""

    def __init__(
        self, models: dict[str, SchemaModel], fmt: type[parsers.ToolFormat], repair: bool
    ) -> None:
        self.models = models
        self._fmt = fmt
        self._repair = repair

    def fresh(self) -> parsers.ToolCatalog:
        return parsers.ToolCatalog(self.models, repair=self._repair, new_id=self._fmt.new_id)


def _catalog(
    tools: list[ToolDefinition], fmt: type[parsers.ToolFormat], budget: Budget, *, repair: bool
) -> _Catalog:
    def build() -> dict[str, SchemaModel]:
        models: dict[str, SchemaModel] = {}
        for tool in tools:
            try:
                models[tool.function.name] = compile_schema(
                    tool.function.parameters or {"type": "object"}, budget
                )
            except SchemaError as exc:
                name = tool.function.name
                raise _schema_error(exc, "tools", f"tool '{name}' parameters") from exc
        return models

    return _Catalog(_COMPILED.get(("tools", _tool_schemas(tools)), build), fmt, repair)


def _tool_schemas(tools: list[ToolDefinition]) -> list[tuple[str, Any]]:
    return [(tool.function.name, tool.function.parameters) for tool in tools]


def _schema_error(exc: SchemaError, param: str, what: str) -> errors.APIError:
    named = (
        f" (keyword '{exc.keyword}')" if exc.keyword and f"'{exc.keyword}'" not in str(exc) else ""
    )
    code = "unsupported_schema" if exc.keyword else "invalid_schema"
    return errors.bad_request(
        f"{what} cannot be enforced: {exc}{named}",
        param=param,
        code="schema_too_complex" if isinstance(exc, TooComplex) else code,
    )


T = TypeVar("T")


class _Compiled:
    """What compiling recent schemas gave, by the schemas' JSON (a small LRU, shared by threads).

    Clients send the same tools and schemas with every request; the key is the JSON text in
    the client's own key order, which the grammar follows (members are written in it).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, build: Callable[[], T]) -> T:
        text = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            if digest in self._items:
                self._items.move_to_end(digest)
                found: T = self._items[digest]
                return found
        made = build()  # refusals raise and are not kept
        with self._lock:
            self._items[digest] = made
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return made


_COMPILED = _Compiled(64)


def _check_sampling(request: ChatCompletionRequest) -> None:
    # The grammar ends the answer with the end token; these would forbid or skip it.
    if request.ignore_eos:
        raise errors.bad_request(
            "ignore_eos cannot be combined with a forced tool call or response_format",
            param="ignore_eos",
        )
    if request.min_tokens:
        raise errors.bad_request(
            "min_tokens cannot be combined with a forced tool call or response_format",
            param="min_tokens",
        )


def _shortest(grammar: Grammar) -> str:
    shortest = grammar.min_text()
    if shortest is None:
        raise errors.bad_request("the schema allows no finite answer", code="invalid_schema")
    return shortest
