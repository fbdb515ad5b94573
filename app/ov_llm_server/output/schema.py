"""The one JSON Schema interpreter: a normalised, typed model of a schema.

:func:`compile_schema` turns a client's schema into nodes (``$ref``/``$defs`` resolved,
``allOf`` merged, ``type`` lists split into unions, ``enum``/``const`` filtered by the other
keywords). The same model builds the grammar (``grammar.py``) and validates and repairs
parsed output (:func:`validate`, :func:`repair`), so the two can never disagree.

Keywords whose meaning this model does not hold are refused with :class:`SchemaError`,
which names the keyword; annotations (``title``, ``description``, ``examples``, …) and
unknown keywords are ignored, as JSON Schema says.
"""

from __future__ import annotations

import datetime
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .budget import CHECK_STEPS, COMPILE_STEPS, Budget, TooComplex
from .budget import SchemaError as SchemaError
from .pattern import pattern_matches, pattern_term

# Validation keywords this model does not hold: refused, never silently ignored.
UNSUPPORTED = (
    "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "dependencies",
    "propertyNames", "patternProperties", "unevaluatedProperties", "unevaluatedItems",
    "contains", "minContains", "maxContains", "$dynamicRef", "$recursiveRef", "additionalItems",
)  # fmt: skip
FORMATS = ("date", "time", "date-time", "uuid", "email", "ipv4")
TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")

MAX_NODES = 2000  # a schema that needs more nodes is refused: it would make a huge grammar
MAX_DEPTH = 32
MAX_OPTIONS = 64  # anyOf / oneOf / type lists
MAX_ENUM = 256


# ---------------------------------------------------------------- the nodes


class Node:
    """A schema node; every node is a frozen dataclass (hashable, comparable)."""


@dataclass(frozen=True)
class AnyNode(Node):
    pass


@dataclass(frozen=True)
class NullNode(Node):
    pass


@dataclass(frozen=True)
class BoolNode(Node):
    pass


@dataclass(frozen=True)
class ConstNode(Node):
    """``enum`` / ``const``: one of these JSON values (kept as canonical JSON text)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class IntNode(Node):
    minimum: int | None = None  # inclusive
    maximum: int | None = None
    multiple_of: int | None = None


@dataclass(frozen=True)
class NumNode(Node):
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    multiple_of: float | None = None


@dataclass(frozen=True)
class StrNode(Node):
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None


@dataclass(frozen=True)
class ArrNode(Node):
    prefix: tuple[Node, ...] = ()
    items: Node | None = field(default_factory=AnyNode)  # None: nothing after the prefix
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False


@dataclass(frozen=True)
class ObjNode(Node):
    properties: tuple[tuple[str, Node], ...] = ()
    required: frozenset[str] = frozenset()
    additional: Node | None = field(default_factory=AnyNode)  # None: additionalProperties false
    min_properties: int = 0
    max_properties: int | None = None


@dataclass(frozen=True)
class UnionNode(Node):
    options: tuple[Node, ...]
    exclusive: bool = False  # oneOf: exactly one option may match


@dataclass(frozen=True)
class RefNode(Node):
    pointer: str


@dataclass
class SchemaModel:
    root: Node
    defs: dict[str, Node]

    def resolve(self, node: Node) -> Node:
        seen = 0
        while isinstance(node, RefNode):
            node = self.defs[node.pointer]
            seen += 1
            if seen > len(self.defs):
                raise SchemaError("'$ref' refers only to itself", "$ref")
        return node


# ---------------------------------------------------------------- building


def compile_schema(schema: Any, budget: Budget | None = None) -> SchemaModel:
    """The model of ``schema``; :class:`SchemaError` when it cannot be used.

    ``budget`` is what the compile may spend (a fresh :data:`COMPILE_STEPS` by default);
    a request's schemas share one, so many tools cost no more than one large schema.
    """
    builder = _Builder(schema, budget or Budget(COMPILE_STEPS))
    try:
        root = builder.build(schema, "", 0)
    except RecursionError as exc:
        raise SchemaError("schema refers to itself without end") from exc
    model = SchemaModel(root, builder.defs)
    for pointer in builder.defs:
        model.resolve(RefNode(pointer))  # '$ref's that lead only to each other are refused here
    return model


class _Builder:
    def __init__(self, root: Any, budget: Budget) -> None:
        self.root = root
        self.budget = budget
        self.defs: dict[str, Node] = {}
        # '$ref' targets with their own '$ref' and 'allOf' merged in, each made once: the
        # same target is named by many 'allOf's (None while it is being made).
        self.flat_refs: dict[str, dict[str, Any] | None] = {}
        self.nodes = 0

    def count(self, path: str) -> None:
        self.budget.spend(1, path)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SchemaError(f"schema is too large (more than {MAX_NODES} parts)", None, path)

    def build(self, schema: Any, path: str, depth: int) -> Node:
        self.count(path)
        if depth > MAX_DEPTH:
            raise SchemaError(f"schema is nested deeper than {MAX_DEPTH}", None, path)
        if schema is True or schema == {}:
            return AnyNode()
        if schema is False:
            raise SchemaError("a 'false' schema allows no value", None, path)
        if not isinstance(schema, dict):
            raise SchemaError("a schema must be an object or a boolean", None, path)
        for keyword in UNSUPPORTED:
            if keyword in schema:
                raise SchemaError(f"'{keyword}' is not supported", keyword, path)
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k != "$ref" and k in _VALIDATION}
            if not rest:
                return self.ref(schema["$ref"], path, depth)
            schema = {**rest, "allOf": [{"$ref": schema["$ref"]}, *schema.get("allOf", [])]}
        if "allOf" in schema:
            schema = self.merge_all_of(schema, path, depth)
        if "enum" in schema or "const" in schema:
            return self.constant(schema, path, depth)
        for keyword, exclusive in (("anyOf", False), ("oneOf", True)):
            if keyword in schema:
                options = schema[keyword]
                if not isinstance(options, list) or not options:
                    raise SchemaError(f"'{keyword}' must be a non-empty list", keyword, path)
                if len(options) > MAX_OPTIONS:
                    raise SchemaError(
                        f"'{keyword}' has more than {MAX_OPTIONS} options", keyword, path
                    )
                rest = {k: v for k, v in schema.items() if k != keyword}
                nodes = tuple(
                    self.build(_with(rest, option), f"{path}/{keyword}/{i}", depth + 1)
                    for i, option in enumerate(options)
                )
                return UnionNode(nodes, exclusive) if len(nodes) > 1 else nodes[0]
        kinds = _kinds(schema, path)
        if len(kinds) == 1:
            return self.typed(kinds[0], schema, path, depth)
        return UnionNode(tuple(self.typed(kind, schema, path, depth) for kind in kinds))

    def target(self, ref: Any, path: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local '$ref's are supported, not {ref!r}", "$ref", path)
        target: Any = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            elif isinstance(target, dict) and part in target:
                target = target[part]
            else:
                raise SchemaError(f"'$ref' {ref} points nowhere", "$ref", path)
        return target

    def ref(self, ref: Any, path: str, depth: int) -> Node:
        target = self.target(ref, path)
        if ref not in self.defs:
            # Named before it is built, so recursive schemas refer back to it.
            self.defs[ref] = RefNode(ref)
            self.defs[ref] = self.build(target, ref[1:], depth + 1)
        return RefNode(ref)

    def merge_all_of(self, schema: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        parts = schema["allOf"]
        if not isinstance(parts, list) or not parts:
            raise SchemaError("'allOf' must be a non-empty list", "allOf", path)
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            merged = self.merge(merged, self.flat(part, path, depth + 1), path)
        return merged

    def flat(self, part: Any, path: str, depth: int) -> dict[str, Any]:
        """An ``allOf`` entry with its own ``$ref`` and ``allOf`` merged in."""
        self.count(path)
        if depth > MAX_DEPTH:
            raise SchemaError(f"'allOf' is nested deeper than {MAX_DEPTH}", "allOf", path)
        schema = _as_dict(part, path)
        if "$ref" in schema:
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**extra, **self.flat_ref(schema["$ref"], path, depth)}
        if "allOf" in schema:
            return self.merge_all_of(schema, path, depth)
        return schema

    def flat_ref(self, ref: Any, path: str, depth: int) -> dict[str, Any]:
        if isinstance(ref, str) and ref in self.flat_refs:
            done = self.flat_refs[ref]
            if done is None:
                raise SchemaError("'allOf' refers to itself without end", "allOf", path)
            return done
        target = self.target(ref, path)
        self.flat_refs[ref] = None
        self.flat_refs[ref] = self.flat(target, path, depth)
        return self.flat_refs[ref] or {}

    def merge(self, a: dict[str, Any], b: dict[str, Any], path: str) -> dict[str, Any]:
        # Enums are intersected pairwise: that is the part of a merge that can grow.
        pairs = len(a.get("enum") or ()) * len(b.get("enum") or ())
        self.budget.spend(len(b) + pairs, path)
        return _merge(a, b, path)

    def constant(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        if "const" in schema:
            values = [schema["const"]]
            if "enum" in schema and not any(_equal(values[0], v) for v in _enum(schema, path)):
                raise SchemaError("'const' is not among 'enum'", "const", path)
        else:
            values = _enum(schema, path)
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
        if any(k in _VALIDATION for k in rest):
            model = SchemaModel(self.build(rest, path, depth + 1), self.defs)
            check = _Check(model, self.budget)  # its cost is the compile's
            values = [v for v in values if check.problem(v, model.root, "") is None]
        if not values:
            raise SchemaError("no value of 'enum'/'const' fits the other keywords", "enum", path)
        return ConstNode(tuple(values))

    def typed(self, kind: str, schema: dict[str, Any], path: str, depth: int) -> Node:
        if kind == "null":
            return NullNode()
        if kind == "boolean":
            return BoolNode()
        if kind == "integer":
            low, high = _bounds(schema, path)
            lo = None if low is None else math.floor(low[0]) + 1 if low[1] else math.ceil(low[0])
            hi = (
                None if high is None else math.ceil(high[0]) - 1 if high[1] else math.floor(high[0])
            )
            if lo is not None and hi is not None and lo > hi:
                raise SchemaError("no integer lies between the bounds", "minimum", path)
            step = _number(schema, "multipleOf", path, positive=True)
            if step is not None and step != int(step):
                raise SchemaError(
                    "'multipleOf' must be a whole number for integers", "multipleOf", path
                )
            return IntNode(lo, hi, None if step is None else int(step))
        if kind == "number":
            low, high = _bounds(schema, path)
            if low and high and (low[0] > high[0] or (low[0] == high[0] and (low[1] or high[1]))):
                raise SchemaError("no number lies between the bounds", "minimum", path)
            return NumNode(
                None if low is None else low[0],
                None if high is None else high[0],
                bool(low and low[1]),
                bool(high and high[1]),
                _number(schema, "multipleOf", path, positive=True),
            )
        if kind == "string":
            lo = _count(schema, "minLength", path) or 0
            hi = _count(schema, "maxLength", path)
            if hi is not None and hi < lo:
                raise SchemaError("'maxLength' is smaller than 'minLength'", "maxLength", path)
            pattern = schema.get("pattern")
            if pattern is not None:
                if not isinstance(pattern, str):
                    raise SchemaError("'pattern' must be a string", "pattern", path)
                # Output is matched against the pattern's term, never by Python's regex
                # engine (see pattern.py); what the term cannot express is refused here.
                self.budget.spend(len(pattern), path)
                pattern_term(pattern, path)
            fmt = schema.get("format")
            if fmt is not None and fmt not in FORMATS:
                raise SchemaError(
                    f"'format' {fmt!r} is not supported (supported: {', '.join(FORMATS)})",
                    "format",
                    path,
                )
            return StrNode(lo, hi, pattern, fmt)
        if kind == "array":
            return self.array(schema, path, depth)
        return self.object(schema, path, depth)

    def array(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        prefix_raw = schema.get("prefixItems") or []
        items_raw = schema.get("items", True)
        if isinstance(items_raw, list):  # the older tuple form
            raise SchemaError(
                "'items' as a list is not supported; use 'prefixItems'", "items", path
            )
        if not isinstance(prefix_raw, list):
            raise SchemaError("'prefixItems' must be a list", "prefixItems", path)
        prefix = tuple(
            self.build(p, f"{path}/prefixItems/{i}", depth + 1) for i, p in enumerate(prefix_raw)
        )
        items = None if items_raw is False else self.build(items_raw, f"{path}/items", depth + 1)
        lo = _count(schema, "minItems", path) or 0
        hi = _count(schema, "maxItems", path)
        if items is None:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        if hi is not None and hi < lo:
            raise SchemaError("the array's bounds leave no valid length", "maxItems", path)
        unique = schema.get("uniqueItems", False) is True
        return ArrNode(prefix, items, lo, hi, unique)

    def object(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise SchemaError("'properties' must be an object", "properties", path)
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
            raise SchemaError("'required' must be a list of names", "required", path)
        members = {
            name: self.build(sub, f"{path}/properties/{name}", depth + 1)
            for name, sub in properties.items()
        }
        extra_raw = schema.get("additionalProperties", True)
        extra = (
            None
            if extra_raw is False
            else self.build(extra_raw, f"{path}/additionalProperties", depth + 1)
        )
        for name in required:
            if name not in members:
                if extra is None:
                    raise SchemaError(
                        f"'{name}' is required but additionalProperties is false", "required", path
                    )
                members[name] = extra
        lo = _count(schema, "minProperties", path) or 0
        hi = _count(schema, "maxProperties", path)
        if hi is not None and hi < lo:
            raise SchemaError(
                "'maxProperties' is smaller than 'minProperties'", "maxProperties", path
            )
        return ObjNode(tuple(members.items()), frozenset(required), extra, lo, hi)


# Keywords that constrain values (as opposed to annotations such as title or description).
_VALIDATION = frozenset(
    [
        "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "required",
        "additionalProperties", "minProperties", "maxProperties", "items", "prefixItems",
        "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "format",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", *UNSUPPORTED,
    ]
)  # fmt: skip
_STRING_KEYS = ("minLength", "maxLength", "pattern", "format")
_NUMBER_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_ARRAY_KEYS = ("items", "prefixItems", "minItems", "maxItems", "uniqueItems")
_OBJECT_KEYS = ("properties", "required", "additionalProperties", "minProperties", "maxProperties")


def _kinds(schema: dict[str, Any], path: str) -> list[str]:
    kind = schema.get("type")
    if kind is None:
        implied = [
            k
            for k, keys in (
                ("object", _OBJECT_KEYS),
                ("array", _ARRAY_KEYS),
                ("string", _STRING_KEYS),
                ("number", _NUMBER_KEYS),
            )
            if any(key in schema for key in keys)
        ]
        # Without "type", each keyword only applies to its own type; a schema naming none is "any".
        return implied or ["any"]
    kinds = kind if isinstance(kind, list) else [kind]
    if not kinds or len(kinds) > MAX_OPTIONS:
        raise SchemaError("'type' must name one or more types", "type", path)
    for k in kinds:
        if k not in TYPES:
            raise SchemaError(f"unknown type {k!r}", "type", path)
    if "integer" in kinds and "number" in kinds:
        kinds = [k for k in kinds if k != "integer"]
    return list(dict.fromkeys(kinds))


def _with(rest: dict[str, Any], option: Any) -> Any:
    """An anyOf/oneOf option with the schema's other keywords applied to it too."""
    if not any(k in _VALIDATION for k in rest):
        return option
    if option is True:
        return rest
    return {"allOf": [rest, option]}


def _as_dict(part: Any, path: str) -> dict[str, Any]:
    if part is True:
        return {}
    if not isinstance(part, dict):
        raise SchemaError("'allOf' entries must be schemas", "allOf", path)
    return part


def _merge(a: dict[str, Any], b: dict[str, Any], path: str) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key not in out or key not in _VALIDATION:
            out.setdefault(key, value)
            continue
        mine = out[key]
        if key == "type":
            left = set(mine if isinstance(mine, list) else [mine])
            right = set(value if isinstance(value, list) else [value])
            for one, other in ((left, right), (right, left)):
                if "number" in one and "integer" in other:
                    one.add("integer")
            both = sorted(left & right)
            if not both:
                raise SchemaError("'allOf' parts allow no common type", "allOf", path)
            out[key] = both if len(both) > 1 else both[0]
        elif key == "properties":
            props = dict(mine)
            for name, sub in value.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out[key] = props
        elif key == "required":
            out[key] = list(dict.fromkeys([*mine, *value]))
        elif key in ("minimum", "minLength", "minItems", "minProperties", "exclusiveMinimum"):
            out[key] = max(mine, value)
        elif key in ("maximum", "maxLength", "maxItems", "maxProperties", "exclusiveMaximum"):
            out[key] = min(mine, value)
        elif key == "enum":
            out[key] = [v for v in mine if any(_equal(v, w) for w in value)]
        elif key == "items":
            out[key] = {"allOf": [mine, value]}
        elif mine != value:
            raise SchemaError(f"'allOf' parts disagree on '{key}'", key, path)
    return out


def _enum(schema: dict[str, Any], path: str) -> list[Any]:
    values = schema["enum"]
    if not isinstance(values, list) or not values:
        raise SchemaError("'enum' must be a non-empty list", "enum", path)
    if len(values) > MAX_ENUM:
        raise SchemaError(f"'enum' has more than {MAX_ENUM} values", "enum", path)
    return values


def _number(schema: dict[str, Any], key: str, path: str, positive: bool = False) -> float | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SchemaError(f"'{key}' must be a number", key, path)
    if positive and value <= 0:
        raise SchemaError(f"'{key}' must be positive", key, path)
    return value


def _bounds(
    schema: dict[str, Any], path: str
) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """(value, exclusive) of the lower and upper bound, the tighter of each pair."""
    out: list[tuple[float, bool] | None] = []
    for inclusive, exclusive, tighter in (
        ("minimum", "exclusiveMinimum", max),
        ("maximum", "exclusiveMaximum", min),
    ):
        a, b = _number(schema, inclusive, path), _number(schema, exclusive, path)
        candidates = [(a, False)] if a is not None else []
        candidates += [(b, True)] if b is not None else []
        if not candidates:
            out.append(None)
            continue
        best = tighter(c[0] for c in candidates)
        out.append((best, any(c[1] for c in candidates if c[0] == best)))
    return out[0], out[1]


def _count(schema: dict[str, Any], key: str, path: str) -> int | None:
    value = schema.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or value != int(value)
    ):
        raise SchemaError(f"'{key}' must be a non-negative integer", key, path)
    return int(value)


# ---------------------------------------------------------------- validation


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _multiple(value: float, step: float) -> bool:
    quotient = value / step
    return math.isfinite(quotient) and abs(quotient - round(quotient)) < 1e-9


def check_format(fmt: str, value: str) -> bool:
    try:
        if fmt == "date":
            return _DATE.fullmatch(value) is not None and bool(datetime.date.fromisoformat(value))
        if fmt == "time":
            return _TIME.fullmatch(value) is not None
        if fmt == "date-time":
            date, sep, time = value.partition("T")
            return bool(sep) and check_format("date", date) and check_format("time", time)
        if fmt == "uuid":
            uuid.UUID(value)
            return all(value[i] == "-" for i in (8, 13, 18, 23)) and len(value) == 36
        if fmt == "email":
            return "@" in value  # as loose as the jsonschema package: a grammar writes far stricter
        if fmt == "ipv4":
            parts = value.split(".")
            return len(parts) == 4 and all(
                p.isdigit() and p.isascii() and str(int(p)) == p and int(p) < 256 for p in parts
            )
    except ValueError:
        return False
    return False


_TIME = re.compile(
    r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
    re.ASCII,
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def validate(
    model: SchemaModel, value: Any, node: Node | None = None, where: str = ""
) -> str | None:
    """Why ``value`` breaks the schema, or None when it fits.

    The check spends from a budget of :data:`CHECK_STEPS`: output that would cost more to
    check (a schema whose ``anyOf``s branch on every level) does not fit.
    """
    check = _Check(model, Budget(CHECK_STEPS))
    try:
        return check.problem(value, model.root if node is None else node, where)
    except (TooComplex, RecursionError) as exc:
        return f"{where or 'value'}: too costly to check against the schema ({exc})"


class _Check:
    """One check of a value: its budget, and what each ``$ref`` said of each part of it."""

    def __init__(self, model: SchemaModel, budget: Budget) -> None:
        self.model = model
        self.budget = budget
        # By (pointer, the part's identity, where): a '$ref' shared by many options of
        # nested anyOfs is checked once per part of the value, not once per path to it.
        # Each entry keeps its part alive, so that no other value takes over its identity.
        self._refs: dict[tuple[str, int, str], tuple[Any, str | None]] = {}
        self.repaired: dict[tuple[str, int], tuple[Any, Any]] = {}  # the same for repair

    def problem(self, value: Any, node: Node, where: str) -> str | None:
        self.budget.spend(1, where)
        here = where or "value"
        if isinstance(node, RefNode):
            key = (node.pointer, id(value), where)
            if key not in self._refs:
                self._refs[key] = (value, f"{here}: the schema refers to itself without end")
                self._refs[key] = (value, self.problem(value, self.model.resolve(node), where))
            return self._refs[key][1]
        if isinstance(node, AnyNode):
            return None
        if isinstance(node, NullNode):
            return None if value is None else f"{here}: expected null"
        if isinstance(node, BoolNode):
            return None if isinstance(value, bool) else f"{here}: expected boolean"
        if isinstance(node, ConstNode):
            self.budget.spend(len(node.values), where)
            return (
                None
                if any(_equal(value, v) for v in node.values)
                else f"{here}: not one of {list(node.values)}"
            )
        if isinstance(node, IntNode | NumNode):
            return _validate_number(node, value, here)
        if isinstance(node, StrNode):
            return self.string(node, value, here)
        if isinstance(node, UnionNode):
            fits = 0
            for option in node.options:
                if self.problem(value, option, where) is None:
                    fits += 1
                    if not node.exclusive or fits > 1:
                        break  # anyOf: one fit is enough; oneOf: a second one is too many
            if fits == 0:
                return f"{here}: matches none of the options"
            if node.exclusive and fits > 1:
                return f"{here}: matches more than one oneOf option"
            return None
        if isinstance(node, ArrNode):
            return self.array(node, value, where)
        if isinstance(node, ObjNode):
            return self.object(node, value, where)
        raise AssertionError(f"unknown node {node!r}")

    def string(self, node: StrNode, value: Any, here: str) -> str | None:
        if not isinstance(value, str):
            return f"{here}: expected string"
        if len(value) < node.min_length:
            return f"{here}: shorter than minLength {node.min_length}"
        if node.max_length is not None and len(value) > node.max_length:
            return f"{here}: longer than maxLength {node.max_length}"
        if node.pattern is not None and not pattern_matches(node.pattern, value, self.budget):
            return f"{here}: does not match pattern {node.pattern!r}"
        if node.format is not None and not check_format(node.format, value):
            return f"{here}: not a valid {node.format}"
        return None

    def array(self, node: ArrNode, value: Any, where: str) -> str | None:
        here = where or "value"
        if not isinstance(value, list):
            return f"{here}: expected array"
        if len(value) < node.min_items:
            return f"{here}: fewer than minItems {node.min_items}"
        if node.max_items is not None and len(value) > node.max_items:
            return f"{here}: more than maxItems {node.max_items}"
        for i, item in enumerate(value):
            rule = node.prefix[i] if i < len(node.prefix) else node.items
            if rule is None:
                return f"{here}: too many items"
            problem = self.problem(item, rule, f"{here}[{i}]")
            if problem is not None:
                return problem
        if node.unique:
            for i, item in enumerate(value):
                self.budget.spend(i, where)
                if any(_equal(item, other) for other in value[:i]):
                    return f"{here}: items are not unique"
        return None

    def object(self, node: ObjNode, value: Any, where: str) -> str | None:
        here = where or "value"
        if not isinstance(value, dict):
            return f"{here}: expected object"
        for key in sorted(node.required):
            if key not in value:
                return f"{here}: missing required '{key}'"
        if len(value) < node.min_properties:
            return f"{here}: fewer than minProperties {node.min_properties}"
        if node.max_properties is not None and len(value) > node.max_properties:
            return f"{here}: more than maxProperties {node.max_properties}"
        properties = dict(node.properties)
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            rule = properties.get(key, node.additional)
            if rule is None:
                return f"{here}: unexpected property '{key}'"
            problem = self.problem(item, rule, path)
            if problem is not None:
                return problem
        return None


def _validate_number(node: IntNode | NumNode, value: Any, here: str) -> str | None:
    if isinstance(node, IntNode):
        if not _is_int(value):
            return f"{here}: expected integer"
        if node.minimum is not None and value < node.minimum:
            return f"{here}: below minimum {node.minimum}"
        if node.maximum is not None and value > node.maximum:
            return f"{here}: above maximum {node.maximum}"
    else:
        if not _is_number(value):
            return f"{here}: expected number"
        if node.minimum is not None and (
            value < node.minimum or (node.exclusive_minimum and value == node.minimum)
        ):
            return f"{here}: below minimum {node.minimum}"
        if node.maximum is not None and (
            value > node.maximum or (node.exclusive_maximum and value == node.maximum)
        ):
            return f"{here}: above maximum {node.maximum}"
    if node.multiple_of is not None and not _multiple(value, node.multiple_of):
        return f"{here}: not a multiple of {node.multiple_of}"
    return None


# ---------------------------------------------------------------- repair


def needs_repair(model: SchemaModel) -> bool:
    """Whether output under this schema's grammar may need :func:`repair` (a ``maxLength``)."""
    seen: set[int] = set()

    def walk(node: Node) -> bool:
        if isinstance(node, RefNode):
            if id(model.defs[node.pointer]) in seen:
                return False
            seen.add(id(model.defs[node.pointer]))
            return walk(model.defs[node.pointer])
        if isinstance(node, StrNode):
            return node.max_length is not None and node.pattern is None and node.format is None
        if isinstance(node, UnionNode):
            return any(walk(o) for o in node.options)
        if isinstance(node, ArrNode):
            return any(walk(p) for p in node.prefix) or (
                node.items is not None and walk(node.items)
            )
        if isinstance(node, ObjNode):
            return any(walk(n) for _, n in node.properties) or (
                node.additional is not None and walk(node.additional)
            )
        return False

    return walk(model.root)


def repair(model: SchemaModel, value: Any) -> Any:
    """``value`` with strings longer than their ``maxLength`` cut to it.

    The grammar cannot bound a string's length cheaply (see grammar.py), so a constrained
    answer's over-long strings are cut here; everything else the grammar already enforces.
    Output that would cost more than :data:`CHECK_STEPS` to repair is returned as it is.
    """
    check = _Check(model, Budget(CHECK_STEPS))
    try:
        return _repair(check, value, model.root)
    except (TooComplex, RecursionError):
        return value


def _repair(check: _Check, value: Any, node: Node) -> Any:
    check.budget.spend()
    if isinstance(node, RefNode):
        key = (node.pointer, id(value))
        if key not in check.repaired:
            check.repaired[key] = (value, value)  # a part that refers to itself stays as it is
            check.repaired[key] = (value, _repair(check, value, check.model.resolve(node)))
        return check.repaired[key][1]
    if isinstance(node, StrNode) and isinstance(value, str):
        if node.max_length is not None and node.pattern is None and node.format is None:
            return value[: node.max_length]
        return value
    if isinstance(node, UnionNode):
        for option in node.options:
            fixed = _repair(check, value, option)
            if check.problem(fixed, option, "") is None:
                return fixed
        return value
    if isinstance(node, ArrNode) and isinstance(value, list):
        rules = [node.prefix[i] if i < len(node.prefix) else node.items for i in range(len(value))]
        return [
            item if rule is None else _repair(check, item, rule)
            for item, rule in zip(value, rules, strict=True)
        ]
    if isinstance(node, ObjNode) and isinstance(value, dict):
        properties = dict(node.properties)
        out = {}
        for key, item in value.items():
            rule = properties.get(key, node.additional)
            out[key] = item if rule is None else _repair(check, item, rule)
        return out
    return value
