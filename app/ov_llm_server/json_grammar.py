"""JSON Schema to a compact-JSON EBNF grammar for OpenVINO GenAI's structured output.

Two reasons not to hand JSON schemas to GenAI directly:

* its ``json_schema`` constraint allows any whitespace between tokens, and small models then
  write newlines until ``max_tokens`` runs out; this grammar allows exactly the layout
  ``json.dumps`` writes (``{"a": 1, "b": [2, 3]}``), so every token moves towards the end;
* a schema GenAI cannot compile fails inside the engine's step and leaves the whole
  pipeline broken for every request. This module only ever emits grammars it knows to be
  valid, and turns a schema it cannot use into :class:`SchemaError` (a 400 for the client).

Keywords a grammar cannot enforce (``pattern``, ``format``, ``not``, numeric bounds, …) are
accepted and not enforced; the output is still valid JSON of the right shape.
"""

from __future__ import annotations

import json
from typing import Any

# Digit runs are bounded: an unbounded run is where a small model can loop.
_BASE_RULES = r"""
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
integer ::= "-"? ("0" | [1-9] [0-9]{0,15})
number ::= integer ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" (string ": " value (", " string ": " value)*)? "}"
array ::= "[" (value (", " value)*)? "]"
"""

_SCALARS = {"string": "string", "integer": "integer", "number": "number",
            "boolean": "boolean", "null": "null"}  # fmt: skip

MAX_RULES = 2000  # a guard against schemas that would expand into huge grammars


class SchemaError(ValueError):
    """The schema cannot be turned into a grammar; the message says why."""


def literal(text: str) -> str:
    """An EBNF string literal matching ``text`` exactly."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_literal(value: Any) -> str:
    try:
        return literal(json.dumps(value, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"not a JSON value: {value!r}") from exc


def _count(schema: dict[str, Any], key: str) -> int | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SchemaError(f"'{key}' must be a non-negative integer")
    return int(value)


def _bounds(schema: dict[str, Any], low_key: str, high_key: str) -> tuple[int, int | None]:
    low = _count(schema, low_key) or 0
    high = _count(schema, high_key)
    if high is not None and high < low:
        raise SchemaError(f"'{high_key}' is smaller than '{low_key}'")
    return low, high


class _Builder:
    def __init__(self, root_schema: Any) -> None:
        self.root_schema = root_schema
        self.rules: list[str] = []
        self.refs: dict[str, str] = {}

    def define(self, expr: str) -> str:
        if len(self.rules) >= MAX_RULES:
            raise SchemaError("schema is too large")
        name = f"r{len(self.rules)}"
        self.rules.append(f"{name} ::= {expr}")
        return name

    def value(self, schema: Any) -> str:
        if schema is True or schema is None or schema == {}:
            return "value"
        if schema is False:
            raise SchemaError("a 'false' schema allows no value")
        if not isinstance(schema, dict):
            raise SchemaError("a schema must be an object")
        if "$ref" in schema:
            return self._ref(schema["$ref"])
        if "allOf" in schema:
            return self.value(_merge_all_of(schema))
        if "const" in schema:
            return _json_literal(schema["const"])
        if "enum" in schema:
            options = schema["enum"]
            if not isinstance(options, list) or not options:
                raise SchemaError("'enum' must be a non-empty list")
            return self.define(" | ".join(_json_literal(v) for v in options))
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                options = schema[keyword]
                if not isinstance(options, list) or not options:
                    raise SchemaError(f"'{keyword}' must be a non-empty list")
                return self.define(" | ".join(self.value(o) for o in options))
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                raise SchemaError("'type' must not be an empty list")
            rest = {k: v for k, v in schema.items() if k != "type"}
            return self.define(" | ".join(self.value({**rest, "type": k}) for k in kind))
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                return "value"
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return self._array(schema)
        if kind == "string":
            return self._string(schema)
        if kind in _SCALARS:
            return _SCALARS[kind]
        raise SchemaError(f"unknown type {kind!r}")

    def _ref(self, ref: Any) -> str:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local '$ref's are supported, not {ref!r}")
        if ref in self.refs:
            return self.refs[ref]
        target: Any = self.root_schema
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise SchemaError(f"'$ref' {ref} points nowhere")
            target = target[part]
        # Named before it is built, so recursive schemas refer back to it.
        name = f"ref{len(self.refs)}"
        self.refs[ref] = name
        self.rules.append(f"{name} ::= {self.value(target)}")
        return name

    def _string(self, schema: dict[str, Any]) -> str:
        low, high = _bounds(schema, "minLength", "maxLength")
        if low == 0 and high is None:
            return "string"
        return self.define(f'"\\"" char{{{low},{"" if high is None else high}}} "\\""')

    def _array(self, schema: dict[str, Any]) -> str:
        low, high = _bounds(schema, "minItems", "maxItems")
        prefix = schema.get("prefixItems") or []
        if not isinstance(prefix, list):
            raise SchemaError("'prefixItems' must be a list")
        items = schema.get("items")
        if isinstance(items, list):  # the older tuple form
            prefix, items = items, schema.get("additionalItems")
        sep = literal(", ")
        fixed = [self.value(p) for p in prefix]
        item = None if items is False else self.value(items)
        if item is None:
            high = len(fixed) if high is None else min(high, len(fixed))
            if low > high:
                raise SchemaError("the array's bounds leave no valid length")
        if not fixed:
            if item is None or high == 0:
                return literal("[]")
            body = f"{item} ({sep} {item}){{{max(low - 1, 0)},{'' if high is None else high - 1}}}"
            return self.define(f'"[" {body if low else f"({body})?"} "]"')
        shown = fixed if high is None else fixed[:high]
        # Element i may be missing when fewer than i + 1 elements are allowed; items beyond
        # the fixed prefix follow the last one.
        body = ""
        if item is not None and len(shown) == len(fixed) and (high is None or high > len(fixed)):
            more_high = "" if high is None else str(high - len(fixed))
            body = f"({sep} {item}){{{max(low - len(fixed), 0)},{more_high}}}"
        for i in range(len(shown) - 1, -1, -1):
            element = shown[i] if i == 0 else f"{sep} {shown[i]}"
            body = f"{element} {body}".strip()
            if i >= low:
                body = f"({body})?"
        return self.define(f'"[" {body} "]"')

    def _object(self, schema: dict[str, Any]) -> str:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise SchemaError("'properties' must be an object")
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
            raise SchemaError("'required' must be a list of names")
        members = dict(properties)
        for key in required:
            members.setdefault(key, True)
        if not members:
            extra = schema.get("additionalProperties", True)
            if isinstance(extra, dict) and extra:
                pair = f"string {literal(': ')} {self.value(extra)}"
                return self.define(f'"{{" ({pair} ({literal(", ")} {pair})*)? "}}"')
            if extra is False:
                return literal("{}")
            return "object"
        # Declared members only, in the declared order; optional ones may be left out.
        # rest: the members from here on after one was written; first: before any was.
        rest = ""
        first = ""
        for key in reversed(list(members)):
            pair = (
                f"{literal(json.dumps(key, ensure_ascii=False) + ': ')} {self.value(members[key])}"
            )
            with_rest = f"{pair} {rest}".strip()
            if key in required:
                rest = self.define(f"{literal(', ')} {with_rest}")
                first = self.define(with_rest)
            else:
                new_rest = f"({literal(', ')} {pair})? {rest}".strip()
                new_first = f"{with_rest} | {first}" if first else f"({with_rest})?"
                rest = self.define(new_rest)
                first = self.define(new_first)
        return self.define(f'"{{" {first} "}}"')


def _merge_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """``allOf`` of object-like schemas, merged into one (enough for generated schemas)."""
    parts = schema["allOf"]
    if not isinstance(parts, list) or not parts:
        raise SchemaError("'allOf' must be a non-empty list")
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in parts:
        if not isinstance(part, dict):
            raise SchemaError("'allOf' entries must be objects")
        if "$ref" in part or "allOf" in part:
            raise SchemaError("'allOf' with references is not supported")
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def schema_to_grammar(schema: Any, root: str = "{value}") -> str:
    """An EBNF grammar for compact JSON fitting ``schema``; :class:`SchemaError` if impossible.

    ``root`` is the EBNF of the whole output, with ``{value}`` where the JSON value goes
    (for example between a model's tool-call tags).
    """
    builder = _Builder(schema)
    try:
        value = builder.value(schema)
    except RecursionError as exc:
        raise SchemaError("schema is nested too deeply") from exc
    rules = [f"root ::= {root.replace('{value}', value)}", *builder.rules]
    return "\n".join(rules) + _BASE_RULES
