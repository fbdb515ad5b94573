"""JSON Schema to a compact-JSON EBNF grammar for OpenVINO GenAI's structured output.

GenAI's own ``json_schema`` constraint allows any whitespace between tokens, and small
models then emit newlines until ``max_tokens`` runs out. This grammar allows exactly one
JSON layout, the one ``json.dumps`` writes (``{"a": 1, "b": [2, 3]}``), so every token the
model picks moves the value towards its end. Schemas using keywords this does not cover
return None; the caller then falls back to GenAI's ``json_schema``.
"""

from __future__ import annotations

import json
from typing import Any

# Keywords whose meaning the grammar would have to enforce but cannot.
_UNSUPPORTED = frozenset(
    {"$ref", "$defs", "definitions", "pattern", "patternProperties", "not", "if", "allOf",
     "prefixItems", "dependentRequired", "dependentSchemas", "uniqueItems", "contains"}
)  # fmt: skip

# Digit runs are bounded: an integer of more than 16 digits is not a useful tool argument,
# and an unbounded run is where a small model can loop.
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


class _Unsupported(Exception):
    pass


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
    return literal(json.dumps(value, ensure_ascii=False))


class _Builder:
    def __init__(self) -> None:
        self.rules: list[str] = []

    def define(self, expr: str) -> str:
        name = f"r{len(self.rules)}"
        self.rules.append(f"{name} ::= {expr}")
        return name

    def value(self, schema: Any) -> str:
        if schema is True or schema == {} or schema is None:
            return "value"
        if not isinstance(schema, dict):
            raise _Unsupported("schema is not an object")
        bad = _UNSUPPORTED.intersection(schema)
        if bad:
            raise _Unsupported(", ".join(sorted(bad)))
        if "const" in schema:
            return _json_literal(schema["const"])
        if "enum" in schema:
            options = schema["enum"]
            if not isinstance(options, list) or not options:
                raise _Unsupported("enum")
            return self.define(" | ".join(_json_literal(v) for v in options))
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                options = schema[keyword]
                if not isinstance(options, list) or not options:
                    raise _Unsupported(keyword)
                return self.define(" | ".join(self.value(o) for o in options))
        kind = schema.get("type")
        if isinstance(kind, list):
            rest = {k: v for k, v in schema.items() if k != "type"}
            return self.define(" | ".join(self.value({**rest, "type": k}) for k in kind))
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema:
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
        raise _Unsupported(f"type {kind!r}")

    def _string(self, schema: dict[str, Any]) -> str:
        low, high = schema.get("minLength"), schema.get("maxLength")
        if low is None and high is None:
            return "string"
        low = int(low or 0)
        bound = "" if high is None else str(int(high))
        return self.define(f'"\\"" char{{{low},{bound}}} "\\""')

    def _array(self, schema: dict[str, Any]) -> str:
        item = self.value(schema.get("items"))
        low = int(schema.get("minItems") or 0)
        high = schema.get("maxItems")
        if high is not None and int(high) == 0:
            return literal("[]")
        more_low = max(low - 1, 0)
        more_high = "" if high is None else str(int(high) - 1)
        body = f"{item} ({literal(', ')} {item}){{{more_low},{more_high}}}"
        if low == 0:
            body = f"({body})?"
        return self.define(f'"[" {body} "]"')

    def _object(self, schema: dict[str, Any]) -> str:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise _Unsupported("properties")
        required = list(schema.get("required") or [])
        members = dict(properties)
        for key in required:
            members.setdefault(key, True)
        if not members:
            extra = schema.get("additionalProperties", True)
            if isinstance(extra, dict) and extra:
                pair = f"string {literal(': ')} {self.value(extra)}"
                return self.define(f'"{{" ({pair} ({literal(", ")} {pair})*)? "}}"')
            return "object"
        # Declared members only, in the declared order; optional ones may be left out.
        # rest[i]: members i.. after at least one was written; first[i]: before any was.
        pairs = [(literal(json.dumps(k, ensure_ascii=False) + ": "), k) for k in members]
        rest: str = ""
        first: str = ""
        for pair_literal, key in reversed(pairs):
            pair = f"{pair_literal} {self.value(members[key])}"
            with_rest = f"{pair} {rest}".strip()
            if key in required:
                new_rest = f"{literal(', ')} {with_rest}"
                new_first = with_rest
            else:
                new_rest = f"({literal(', ')} {pair})? {rest}".strip()
                new_first = f"{with_rest} | {first}" if first else f"({with_rest})?"
            rest = self.define(new_rest)
            first = self.define(new_first)
        return self.define(f'"{{" {first} "}}"')


def schema_to_grammar(schema: Any, root: str = "{value}") -> str | None:
    """An EBNF grammar for compact JSON fitting ``schema``, or None if it cannot be expressed.

    ``root`` is the EBNF of the whole output, with ``{value}`` where the JSON value goes
    (for example between a model's tool-call tags).
    """
    builder = _Builder()
    try:
        value = builder.value(schema)
    except (_Unsupported, TypeError, ValueError):
        return None
    return "\n".join([f"root ::= {root.replace('{value}', value)}", *builder.rules]) + _BASE_RULES
