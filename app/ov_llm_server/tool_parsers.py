"""Finding tool calls in generated text, safely while streaming.

Each parser turns text into content and complete :class:`ParsedToolCall` objects. A call
is emitted only once its JSON is complete, so streamed arguments are never a fragment.
Text that only might start a call is held back until it is clear. A call that does not
parse, names an unknown function or breaks the tool's parameter schema is returned as
plain content: nothing the model wrote is dropped.

Formats:

* ``hermes`` (Hermes, Qwen2.5, Qwen3, …): ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``,
  any number of them, with text before or between.
* ``llama3_json`` (Llama 3.1/3.2): the whole answer is ``{"name": …, "parameters": {…}}``,
  optionally after ``<|python_tag|>``, several calls separated by ``;``.
* ``json``: a forced call (``tool_choice`` "required" or a named function) from a model
  without a format of its own, constrained to :func:`forced_tool_schema`: one call object,
  or a list of them.

Forced calls of models with a format are written in that format (see ``structured.py``)
and read by the same parsers as free ones.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from .parsing import OutputParser, ParsedDelta, ParsedToolCall
from .protocol import ChatCompletionRequest, NamedToolChoice, ToolDefinition
from .textutil import partial_suffix

log = logging.getLogger(__name__)

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def detect_tool_parser(chat_template: str) -> str:
    """The tool-call format a chat template teaches its model."""
    if HERMES_OPEN in chat_template:
        return "hermes"
    if PYTHON_TAG in chat_template or '"parameters"' in chat_template:
        return "llama3_json"
    # Templates without a tool format of their own: Hermes tags are the most common.
    return "hermes"


# ---------------------------------------------------------------- call validation


class ToolCatalog:
    """The request's tools: which names exist and what their arguments must look like."""

    def __init__(self, tools: Sequence[ToolDefinition]) -> None:
        self.schemas: dict[str, dict[str, Any]] = {
            tool.function.name: tool.function.parameters or {"type": "object"} for tool in tools
        }
        self._next_index = 0

    def make_call(self, payload: Any, *, args_key: str = "arguments") -> ParsedToolCall | None:
        """A call from decoded JSON, or None when it is not a valid call of a known tool."""
        if not isinstance(payload, dict):
            return None
        name = payload.get("name")
        if not isinstance(name, str) or name not in self.schemas:
            return None
        keys = (args_key, "arguments", "parameters")
        present = [k for k in keys if k in payload]
        arguments: Any = payload[present[0]] if present else {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        problem = schema_error(arguments, self.schemas[name])
        if problem is not None:
            log.info("tool call %s returned as text: arguments %s", name, problem)
            return None
        call = ParsedToolCall(
            index=self._next_index,
            id=new_call_id(),
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


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "integer": (int,),
    "number": (int, float),
}


def schema_error(value: Any, schema: Any, where: str = "") -> str | None:
    """Why ``value`` breaks ``schema`` (the parts of JSON Schema tool definitions use), or None.

    Keywords this does not know are accepted, so an unusual schema never rejects a call.
    """
    if not isinstance(schema, dict):
        return None
    here = where or "arguments"
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        known = [k for k in kinds if k in _TYPES]
        if known and not any(_is_type(value, k) for k in known):
            return f"{here}: expected {' or '.join(known)}"
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        return f"{here}: not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        return f"{here}: must be {schema['const']!r}"
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options:
            if all(schema_error(value, option, where) is not None for option in options):
                return f"{here}: matches none of {keyword}"
    for option in schema.get("allOf") or []:
        problem = schema_error(value, option, where)
        if problem is not None:
            return problem
    if isinstance(value, dict):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        for key in schema.get("required") or []:
            if key not in value:
                return f"{here}: missing required '{key}'"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if key in properties:
                problem = schema_error(item, properties[key], path)
                if problem is not None:
                    return problem
            elif extra is False:
                return f"{here}: unexpected property '{key}'"
            elif isinstance(extra, dict):
                problem = schema_error(item, extra, path)
                if problem is not None:
                    return problem
    if isinstance(value, list):
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # the older tuple form
            prefix, items = items, schema.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        for i, item in enumerate(value):
            rule = prefix[i] if i < len(prefix) else items
            if rule is False:
                return f"{here}: too many items"
            problem = schema_error(item, rule, f"{here}[{i}]")
            if problem is not None:
                return problem
    size = len(value) if isinstance(value, list | str) else None
    if size is not None:
        low_key, high_key = (
            ("minItems", "maxItems") if isinstance(value, list) else ("minLength", "maxLength")
        )
        low, high = schema.get(low_key), schema.get(high_key)
        if isinstance(low, int) and size < low:
            return f"{here}: shorter than {low_key} {low}"
        if isinstance(high, int) and size > high:
            return f"{here}: longer than {high_key} {high}"
    return None


def _is_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


# ---------------------------------------------------------------- parsers


class HermesToolParser(OutputParser):
    """``<tool_call>{json}</tool_call>`` blocks anywhere in the answer."""

    def __init__(self, catalog: ToolCatalog) -> None:
        self._catalog = catalog
        self._buf = ""
        self._in_call = False
        # Whitespace next to calls is formatting, not content: trailing whitespace is held
        # until it is clear whether a call follows, and whitespace right after a call is dropped.
        self._held_space = ""
        self._after_call = False
        self._calls = 0

    def feed(self, text: str) -> ParsedDelta:
        self._buf += text
        out = ParsedDelta()
        while True:
            if self._in_call:
                end = self._buf.find(HERMES_CLOSE)
                if end < 0:
                    return out
                body = self._buf[:end]
                self._buf = self._buf[end + len(HERMES_CLOSE) :]
                self._in_call = False
                self._close_call(body, HERMES_OPEN + body + HERMES_CLOSE, out)
                continue
            start = self._buf.find(HERMES_OPEN)
            if start >= 0:
                self._text(self._buf[:start], out)
                self._buf = self._buf[start + len(HERMES_OPEN) :]
                self._in_call = True
                continue
            keep = partial_suffix(self._buf, HERMES_OPEN)
            self._text(self._buf[: len(self._buf) - keep], out)
            self._buf = self._buf[len(self._buf) - keep :]
            return out

    def finish(self) -> ParsedDelta:
        out = ParsedDelta()
        rest, self._buf = self._buf, ""
        if self._in_call:
            # No closing tag (cut off, or the model ended right after the JSON).
            self._in_call = False
            self._close_call(rest, HERMES_OPEN + rest, out)
        else:
            self._text(rest, out)
        if not self._calls:
            out.content += self._held_space
        self._held_space = ""
        return out

    def _text(self, text: str, out: ParsedDelta) -> None:
        text, self._held_space = self._held_space + text, ""
        if self._after_call:
            text = text.lstrip()
            if not text:
                return
        body = text.rstrip()
        # Held until the call (or the text) that follows decides whether it is content.
        self._held_space = text[len(body) :]
        if body:
            out.content += body
            self._after_call = False

    def _close_call(self, body: str, raw: str, out: ParsedDelta) -> None:
        call = _decode_call(body, self._catalog)
        if call is None:
            out.content += self._held_space + raw
            self._held_space = ""
            self._after_call = False
            return
        out.tool_calls.append(call)
        self._calls += 1
        self._held_space = ""
        self._after_call = True


def _decode_call(body: str, catalog: ToolCatalog) -> ParsedToolCall | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return catalog.make_call(payload)


class Llama3JsonToolParser(OutputParser):
    """Llama 3 JSON: an answer starting with ``{`` (or ``<|python_tag|>``) is calls only."""

    def __init__(self, catalog: ToolCatalog) -> None:
        self._catalog = catalog
        self._buf = ""
        self._mode = "start"  # then "calls" (buffering JSON) or "text" (plain content)

    def feed(self, text: str) -> ParsedDelta:
        self._buf += text
        if self._mode == "start":
            head = self._buf.lstrip()
            if head.startswith(PYTHON_TAG) or head.startswith("{"):
                self._mode = "calls"
            elif not head or PYTHON_TAG.startswith(head):
                return ParsedDelta()
            else:
                self._mode = "text"
        if self._mode == "text":
            out, self._buf = self._buf, ""
            return ParsedDelta(content=out)
        return ParsedDelta()  # calls are decided as a whole, at the end

    def finish(self) -> ParsedDelta:
        rest, self._buf = self._buf, ""
        if self._mode != "calls":
            return ParsedDelta(content=rest)
        calls = self._decode_all(rest)
        if calls is None:
            return ParsedDelta(content=rest)
        return ParsedDelta(tool_calls=calls)

    def _decode_all(self, text: str) -> list[ParsedToolCall] | None:
        body = text.strip()
        if body.startswith(PYTHON_TAG):
            body = body[len(PYTHON_TAG) :]
        decoder = json.JSONDecoder()
        payloads: list[Any] = []
        pos = 0
        while True:
            while pos < len(body) and (body[pos].isspace() or body[pos] == ";"):
                pos += 1
            if pos == len(body):
                break
            try:
                payload, pos = decoder.raw_decode(body, pos)
            except ValueError:
                return None
            payloads.extend(payload if isinstance(payload, list) else [payload])
        # One bad call turns the whole answer into text.
        return self._catalog.make_calls(payloads, args_key="parameters") or None


class ForcedToolParser(OutputParser):
    """Output constrained to :func:`forced_tool_schema`: a call object or a list of them."""

    def __init__(self, catalog: ToolCatalog) -> None:
        self._catalog = catalog
        self._buf = ""

    def feed(self, text: str) -> ParsedDelta:
        self._buf += text
        return ParsedDelta()

    def finish(self) -> ParsedDelta:
        rest, self._buf = self._buf, ""
        try:
            payload = json.loads(rest)
        except ValueError:
            return ParsedDelta(content=rest)  # cut off by max_tokens, most likely
        calls = self._catalog.make_calls(payload if isinstance(payload, list) else [payload])
        if not calls:
            return ParsedDelta(content=rest)
        return ParsedDelta(tool_calls=calls)


# ---------------------------------------------------------------- forcing calls


def chosen_tools(request: ChatCompletionRequest) -> list[ToolDefinition]:
    """The tools a forced call may use: the named one, or all for "required"."""
    tools = request.tools or []
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        return [t for t in tools if t.function.name == choice.function.name]
    return list(tools)


def forces_tool_call(request: ChatCompletionRequest) -> bool:
    choice = request.tool_choice
    return bool(request.tools) and (choice == "required" or isinstance(choice, NamedToolChoice))


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


def forced_tool_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """A JSON schema that only a valid call (or list of calls) of the chosen tools fits."""
    if not forces_tool_call(request):
        return None
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [tool.function.name]},
                "arguments": tool.function.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in chosen_tools(request)
    ]
    call: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if several_forced_calls(request):
        return {"type": "array", "items": call, "minItems": 1}
    return call
