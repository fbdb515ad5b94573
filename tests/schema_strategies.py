"""Hypothesis strategies for JSON schemas within what the server enforces, and JSON values."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

PATTERNS = [
    "^[a-z]{2,4}$",
    r"^\d{3}-\d{4}$",
    "^(yes|no|maybe)$",
    "^[A-Z][a-z]+$",
    "ab",
    r'^x[^"\\]*y$',
    r"^\w+@\w+\.com$",
    "^[À-ÿ]+!?$",
    "^(ab)+c?$",
]
_keys = st.text(alphabet='ab"\\\n é:{', min_size=0, max_size=4)
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), _keys)
_strings = st.one_of(
    st.just({"type": "string"}),
    st.builds(
        lambda low, extra: {"type": "string", "minLength": low, "maxLength": low + extra},
        st.integers(0, 3),
        st.integers(0, 20),
    ),
    st.sampled_from(["date", "time", "date-time", "uuid", "email", "ipv4"]).map(
        lambda f: {"type": "string", "format": f}
    ),
    st.sampled_from(PATTERNS).map(lambda p: {"type": "string", "pattern": p}),
)
_integers = st.builds(
    lambda low, span, exclusive: {
        k: v
        for k, v in {
            "type": "integer",
            ("exclusiveMinimum" if exclusive else "minimum"): low,
            "maximum": None if span is None else (low or 0) + span + 1,
        }.items()
        if v is not None
    },
    st.one_of(st.none(), st.integers(-(10**6), 10**6)),
    st.one_of(st.none(), st.integers(0, 10**7)),
    st.booleans(),
)
_numbers = st.builds(
    lambda low, high: {
        k: v
        for k, v in {
            "type": "number",
            "minimum": low,
            "maximum": None if high is None else low + high,
        }.items()
        if v is not None
    },
    st.one_of(st.just(0), st.integers(-50, 50), st.floats(-10, 10).map(lambda x: round(x, 2))),
    st.one_of(st.none(), st.integers(1, 1000)),
)
_scalars = st.one_of(
    _strings,
    _integers,
    _numbers,
    st.sampled_from([{"type": t} for t in ("integer", "number", "boolean", "null")]),
    st.lists(_json_scalars, min_size=1, max_size=4, unique_by=lambda v: json.dumps(v)).map(
        lambda values: {"enum": values}
    ),
    _keys.map(lambda value: {"const": value}),
    st.just({}),
)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    objects = st.builds(
        lambda props, required, extra: {
            "type": "object",
            "properties": props,
            "required": [k for k in props if k in required],
            "additionalProperties": extra,
        },
        st.dictionaries(_keys, children, max_size=4),
        st.sets(_keys, max_size=3),
        st.booleans(),
    )
    maps = children.map(lambda c: {"type": "object", "additionalProperties": c, "maxProperties": 3})
    arrays = st.builds(
        lambda items, low, extra, prefix: {
            "type": "array",
            "items": items,
            "minItems": low,
            "maxItems": low + extra,
            **({"prefixItems": prefix} if prefix else {}),
        },
        children,
        st.integers(0, 2),
        st.integers(0, 3),
        st.lists(children, max_size=2),
    )
    unions = st.lists(children, min_size=1, max_size=3).map(lambda options: {"anyOf": options})
    exclusive = st.just({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]})
    typed = st.lists(
        st.sampled_from(["string", "integer", "object", "array", "null"]), min_size=1, max_size=3
    ).map(lambda kinds: {"type": kinds})
    return st.one_of(objects, maps, arrays, unions, exclusive, typed)


_inner = st.recursive(_scalars, _compound, max_leaves=10)
SCHEMAS = st.one_of(
    _inner,
    _inner.map(
        lambda d: {"$defs": {"d": d}, "type": "object", "properties": {"a": {"$ref": "#/$defs/d"}}}
    ),
)
# Schemas whose strings are often shorter than the grammar's sentences: maxLength cuts.
SHORT_STRING_SCHEMAS = st.recursive(
    st.one_of(st.integers(0, 2).map(lambda n: {"type": "string", "maxLength": n}), _scalars),
    _compound,
    max_leaves=6,
)
JSON_VALUES = st.recursive(
    st.one_of(_json_scalars, st.floats(-100, 100, allow_nan=False)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(_keys, c, max_size=3)),
    max_leaves=8,
)


def largest_allowed_schema() -> dict[str, Any]:
    """The largest schema the grammar's limits allow: a wide ``anyOf``, every format, counted
    patterns up to the limit, deep nesting (tests/test_structured.py compiles it,
    bench/grammar_compile.py times its compile)."""
    formats = ["date", "time", "date-time", "uuid", "email", "ipv4"]
    first: dict[str, Any] = {
        "type": "object",
        "properties": {f"k{i}": {"type": "string", "format": f} for i, f in enumerate(formats)}
        | {"code": {"type": "string", "pattern": "^[A-Z]{8}-[a-z]{8}$"}},
        "required": ["k0", "code"],
    }
    variants = [first] + [
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": i, "maximum": 10**i},
                "t": {"const": i},
            },
        }
        for i in range(60)
    ]
    deep: Any = {"type": "string"}
    for _ in range(30):
        deep = {"type": "object", "properties": {"x": deep}, "required": ["x"]}
    return {
        "type": "object",
        "properties": {"wide": {"anyOf": variants}, "deep": deep},
        "required": ["wide"],
    }


_SHARED_KINDS = ("allOf", "anyOf", "oneOf", "properties", "items", "enum", "sibling")


def _shared_part(kind: str, refs: list[dict[str, str]], enum: list[Any]) -> dict[str, Any]:
    if kind in ("allOf", "anyOf", "oneOf"):
        return {kind: refs}
    if kind == "properties":
        return {"type": "object", "properties": {f"p{k}": r for k, r in enumerate(refs)}}
    if kind == "items":
        return {"type": "array", "items": refs[0], "prefixItems": refs[1:], "maxItems": 3}
    if kind == "enum":
        return {"enum": enum, "anyOf": refs}
    return {**refs[0], "minLength": 1, "allOf": refs[1:] or [True]}


@st.composite
def shared_part_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """Small schemas whose ``$defs`` form a DAG: each part refers to later parts, often more
    than once, through one kind of keyword (or a mix). A schema of n parts then has up to
    3**n paths through it: what a hostile client sends to make a careless walk exponential
    (tests/test_schema_bounds.py counts the walk's work)."""
    count = draw(st.integers(1, 30))
    kind = draw(st.sampled_from([*_SHARED_KINDS, "mixed"]))
    # Leaves that many values fit, so that enums fit and the walk goes deep.
    leaf = st.sampled_from([{}, {"type": "string"}, {"type": ["string", "integer", "null"]}])
    defs: dict[str, Any] = {f"d{count}": draw(leaf)}
    for i in reversed(range(count)):
        later = [f"#/$defs/d{j}" for j in range(i + 1, min(i + 3, count + 1))]
        refs = [{"$ref": r} for r in draw(st.lists(st.sampled_from(later), min_size=1, max_size=3))]
        enum = draw(st.lists(st.sampled_from(["a", 1, None]), min_size=1, max_size=3))
        here = draw(st.sampled_from(_SHARED_KINDS)) if kind == "mixed" else kind
        defs[f"d{i}"] = _shared_part(here, refs, enum)
    if draw(st.booleans()):
        return {"$defs": defs, "enum": ["a", 1, None], "anyOf": [{"$ref": "#/$defs/d0"}]}
    return {"$defs": defs, "$ref": "#/$defs/d0"}
