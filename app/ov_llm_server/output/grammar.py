"""The schema model as an EBNF grammar for GenAI's structured output (XGrammar).

The output is compact JSON in the layout ``json.dumps`` writes (``{"a": 1, "b": [2, 3]}``):
small models given free whitespace write newlines until ``max_tokens`` runs out.

What the grammar does *not* do is count characters. XGrammar unrolls a counted repetition
such as ``char{0,64}`` into one state per position and precomputes a token mask for each:
on SmolLM2's 49k vocabulary that is about 70 ms of compile time per position, inside the
engine's step (every other request waits), and from about 256 positions on every step of
the request pays about 0.7 s instead. So strings are ``char*`` (one state), and
the token budget is kept another way:

* the plan refuses a schema whose shortest document does not fit ``max_tokens`` (a token
  writes at least one byte, so a document of at most ``max_tokens - 1`` bytes, plus the end
  token, always fits);
* output the budget cut short is finished by :meth:`terms.Grammar.close` with the shortest
  text the same grammar allows, so it is still a document of the schema;
* ``maxLength`` is applied to the parsed value (:func:`schema.repair`).

Counting that only admits a few tokens per position (digits, ``", "`` between items) is cheap
and stays in the grammar: ``maxItems``, integer ranges, bounded digit runs.

Everything this module cannot enforce raises :class:`SchemaError` naming the keyword.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .budget import Budget
from .pattern import DIGIT, FORMATS, nat_range, pattern_term
from .schema import (
    AnyNode,
    ArrNode,
    BoolNode,
    ConstNode,
    IntNode,
    Node,
    NullNode,
    NumNode,
    ObjNode,
    RefNode,
    SchemaError,
    SchemaModel,
    StrNode,
    UnionNode,
)
from .terms import Alt, Cls, Grammar, Lit, Rep, Rule, Seq, Term, alt, chars, opt, seq

INT_DIGITS = 15  # |integers| below 10**15: exact as doubles, and no endless digit runs
FRACTION_DIGITS = 9
# Counted positions of repetitions over a wide class (more than 16 characters) in one
# grammar: each costs a precomputed token mask (see the module docstring).
MAX_WIDE_POSITIONS = 16
MAX_RULES = 4000

_SPECIALS = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))  # what JSON strings must escape
_ESCAPES = '"\\\n\t\r\b\f'
CHAR = alt(Cls(_SPECIALS, negated=True), seq(Lit("\\"), chars('"\\/bfnrt')))
_INT_LIMIT = 10**INT_DIGITS - 1


class JsonGrammar:
    """Lowers schema models into one grammar; formats wrap the terms in their own layout."""

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget
        self.rules: dict[str, Term] = {}
        self._names: dict[Term, str] = {}
        self._wide = 0
        self._models = 0
        self._memo: dict[tuple[int, Node], Term] = {}
        self._base()

    def grammar(self, root: Term) -> Grammar:
        return Grammar(root, self.rules, self.budget)

    def define(self, term: Term, name: str | None = None) -> Rule:
        if self.budget is not None:
            self.budget.spend()
        if name is None and term in self._names:
            return Rule(self._names[term])
        if len(self.rules) >= MAX_RULES:
            raise SchemaError("schema is too large for a grammar")
        name = name or f"r{len(self.rules)}"
        self.rules[name] = term
        self._names.setdefault(term, name)
        return Rule(name)

    def _base(self) -> None:
        self.define(CHAR, "char")
        self.define(seq(Lit('"'), Rep(Rule("char")), Lit('"')), "string")
        digits = seq(Cls(((0x31, 0x39),)), Rep(DIGIT, 0, INT_DIGITS - 1))
        self.define(seq(opt(Lit("-")), alt(Lit("0"), digits)), "integer")
        self.define(
            seq(Rule("integer"), opt(seq(Lit("."), Rep(DIGIT, 1, FRACTION_DIGITS)))), "number"
        )
        pair = seq(Rule("string"), Lit(": "), Rule("value"))
        self.define(seq(Lit("{"), Rep(pair, sep=Lit(", ")), Lit("}")), "object")
        self.define(seq(Lit("["), Rep(Rule("value"), sep=Lit(", ")), Lit("]")), "array")
        scalars = (Lit("true"), Lit("false"), Lit("null"))
        names = ("object", "array", "string", "number")
        self.define(alt(*(Rule(n) for n in names), *scalars), "value")

    # ------------------------------------------------------------ nodes

    def model(self, model: SchemaModel) -> Term:
        """The term of ``model``'s root; every model gets its own names for its ``$ref``s."""
        self._models += 1
        return self.node(model, model.root, self._models, "")

    def node(self, model: SchemaModel, node: Node, tag: int, path: str) -> Term:
        key = (tag, node)
        if key not in self._memo:
            self._memo[key] = self._lower(model, node, tag, path)
        return self._memo[key]

    def _lower(self, model: SchemaModel, node: Node, tag: int, path: str) -> Term:
        if isinstance(node, AnyNode):
            return Rule("value")
        if isinstance(node, NullNode):
            return Lit("null")
        if isinstance(node, BoolNode):
            return alt(Lit("true"), Lit("false"))
        if isinstance(node, ConstNode):
            return alt(*(Lit(json.dumps(v, ensure_ascii=False)) for v in node.values))
        if isinstance(node, IntNode):
            if node.multiple_of not in (None, 1):
                raise SchemaError("'multipleOf' cannot be enforced", "multipleOf", path)
            return self.define(_integer(node.minimum, node.maximum, path))
        if isinstance(node, NumNode):
            return self.define(_number(node, path))
        if isinstance(node, StrNode):
            return self._string(node, path)
        if isinstance(node, ArrNode):
            return self._array(model, node, tag, path)
        if isinstance(node, ObjNode):
            return self._object(model, node, tag, path)
        if isinstance(node, UnionNode):
            if node.exclusive and not _disjoint(model, node.options, self.budget):
                raise SchemaError(
                    "'oneOf' whose options can overlap cannot be enforced", "oneOf", path
                )
            return self.define(alt(*(self.node(model, o, tag, path) for o in node.options)))
        if isinstance(node, RefNode):
            name = f"m{tag}_{_rule_name(node.pointer)}"
            if name not in self.rules:
                self.rules[name] = Lit("")  # a placeholder while recursive references are built
                self.rules[name] = self.node(model, model.defs[node.pointer], tag, node.pointer)
            return Rule(name)
        raise AssertionError(f"unknown node {node!r}")

    def _string(self, node: StrNode, path: str) -> Term:
        if node.pattern is not None and node.format is not None:
            raise SchemaError(
                "'pattern' together with 'format' cannot be enforced", "pattern", path
            )
        if node.pattern is None and node.format is None:
            if node.min_length == 0:
                return Rule("string")
            self._spend(node.min_length, "minLength", path)
            return self.define(seq(Lit('"'), Rep(Rule("char"), node.min_length), Lit('"')))
        keyword = "pattern" if node.pattern is not None else "format"
        body = (
            pattern_term(node.pattern, path)
            if node.pattern is not None
            else FORMATS[node.format or ""]
        )
        low, high = _lengths(body)
        if node.max_length is not None and (high is None or high > node.max_length):
            raise SchemaError(
                f"'maxLength' together with '{keyword}' cannot be enforced", "maxLength", path
            )
        if node.min_length > low:
            raise SchemaError(
                f"'minLength' together with '{keyword}' cannot be enforced", "minLength", path
            )
        self._spend(_wide_positions(body), keyword, path)
        return self.define(seq(Lit('"'), _json_escaped(body), Lit('"')))

    def _spend(self, positions: int, keyword: str, path: str) -> None:
        self._wide += positions
        if self._wide > MAX_WIDE_POSITIONS:
            raise SchemaError(
                f"'{keyword}' needs more counted characters than a grammar can afford "
                f"({MAX_WIDE_POSITIONS} in all)",
                keyword,
                path,
            )

    def _array(self, model: SchemaModel, node: ArrNode, tag: int, path: str) -> Term:
        if node.unique and (node.max_items is None or node.max_items > 1):
            raise SchemaError("'uniqueItems' cannot be enforced", "uniqueItems", path)
        comma = Lit(", ")
        fixed = [self.node(model, p, tag, f"{path}/prefixItems") for p in node.prefix]
        item = None if node.items is None else self.node(model, node.items, tag, f"{path}/items")
        lo, hi = node.min_items, node.max_items
        if not fixed:
            if item is None or hi == 0:
                return Lit("[]")
            return self.define(seq(Lit("["), Rep(item, lo, hi, comma), Lit("]")))
        shown = fixed if hi is None else fixed[:hi]
        body: Term = Lit("")
        if item is not None and len(shown) == len(fixed) and (hi is None or hi > len(fixed)):
            more = None if hi is None else hi - len(fixed)
            body = Rep(seq(comma, item), max(lo - len(fixed), 0), more)
        for i in range(len(shown) - 1, -1, -1):
            body = seq(shown[i] if i == 0 else seq(comma, shown[i]), body)
            if i >= lo:
                body = opt(body)
        return self.define(seq(Lit("["), body, Lit("]")))

    def _object(self, model: SchemaModel, node: ObjNode, tag: int, path: str) -> Term:
        if not node.properties:
            if node.additional is None or node.max_properties == 0:
                if node.min_properties:
                    raise SchemaError(
                        "'minProperties' leaves no valid object", "minProperties", path
                    )
                return Lit("{}")
            value = self.node(model, node.additional, tag, f"{path}/additionalProperties")
            pair = seq(Rule("string"), Lit(": "), value)
            body = Rep(pair, node.min_properties, node.max_properties, Lit(", "))
            return self.define(seq(Lit("{"), body, Lit("}")))
        # Declared members only, in the declared order; optional ones may be left out.
        if node.min_properties > len(node.required):
            raise SchemaError(
                "'minProperties' above the required members cannot be enforced",
                "minProperties",
                path,
            )
        if node.max_properties is not None and node.max_properties < len(node.properties):
            raise SchemaError(
                "'maxProperties' below the declared members cannot be enforced",
                "maxProperties",
                path,
            )
        rest: Term = Lit("")  # the members from here on, after one was written
        first: Term = Lit("")  # the same, before any was written
        for name, sub in reversed(node.properties):
            value = self.node(model, sub, tag, f"{path}/properties/{name}")
            pair = seq(Lit(json.dumps(name, ensure_ascii=False) + ": "), value)
            with_rest = seq(pair, rest)
            if name in node.required:
                rest = self.define(seq(Lit(", "), with_rest))
                first = self.define(with_rest)
            else:
                rest = self.define(seq(opt(seq(Lit(", "), pair)), rest))
                first = self.define(alt(with_rest, first) if first != Lit("") else opt(with_rest))
        return self.define(seq(Lit("{"), first, Lit("}")))


def _rule_name(pointer: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in pointer.strip("#/")) or "root"


# ---------------------------------------------------------------- numbers


def _integer(minimum: int | None, maximum: int | None, path: str) -> Term:
    lo = -_INT_LIMIT if minimum is None else minimum
    hi = _INT_LIMIT if maximum is None else maximum
    if lo > _INT_LIMIT or hi < -_INT_LIMIT:
        raise SchemaError(
            f"integer bounds beyond ±{_INT_LIMIT} cannot be enforced", "minimum", path
        )
    lo, hi = max(lo, -_INT_LIMIT), min(hi, _INT_LIMIT)
    parts: list[Term] = []
    if lo < 0:
        parts.append(seq(Lit("-"), _naturals(max(1, -hi), -lo)))
    if hi >= 0:
        parts.append(_naturals(max(lo, 0), hi))
    return alt(*parts)


def _naturals(lo: int, hi: int) -> Term:
    """lo..hi as numerals; whole decades of widths share one bounded digit run (cheaper)."""
    full_from = len(str(lo)) + (0 if lo in (0, 1) or lo == 10 ** (len(str(lo)) - 1) else 1)
    full_to = len(str(hi)) - (0 if hi == 10 ** len(str(hi)) - 1 else 1)
    if full_to - full_from < 1:
        return nat_range(lo, hi)
    parts: list[Term] = []
    start = 10 ** (full_from - 1) if full_from > 1 else 1
    if lo < start:
        parts.append(nat_range(lo, start - 1))
    parts.append(seq(Cls(((0x31, 0x39),)), Rep(DIGIT, full_from - 1, full_to - 1)))
    if hi > 10**full_to - 1:
        parts.append(nat_range(10**full_to, hi))
    return alt(*parts)


def _number(node: NumNode, path: str) -> Term:
    if node.multiple_of is not None:
        raise SchemaError("'multipleOf' cannot be enforced", "multipleOf", path)
    if node.minimum is None and node.maximum is None:
        return Rule("number")
    # Whole-number bounds, moved inwards: every number written lies within the schema's.
    lo = (
        -_INT_LIMIT
        if node.minimum is None
        else (math.floor(node.minimum) + 1 if node.exclusive_minimum else math.ceil(node.minimum))
    )
    hi = (
        _INT_LIMIT
        if node.maximum is None
        else (math.ceil(node.maximum) - 1 if node.exclusive_maximum else math.floor(node.maximum))
    )
    lo, hi = max(lo, -_INT_LIMIT), min(hi, _INT_LIMIT)
    if lo > hi:
        raise SchemaError(
            "number bounds with no whole number between them cannot be enforced", "minimum", path
        )
    fraction = opt(seq(Lit("."), Rep(DIGIT, 1, FRACTION_DIGITS)))
    parts: list[Term] = []
    if hi >= 0:
        low = max(lo, 0)
        if low <= hi - 1:
            parts.append(seq(_naturals(low, hi - 1), fraction))
        parts.append(Lit(str(hi)))
    if lo <= -1:
        top = -lo  # magnitudes below it may take a fraction; it itself may not
        bottom = max(1, -hi)
        if bottom <= top - 1:
            parts.append(seq(Lit("-"), _naturals(bottom, top - 1), fraction))
        parts.append(Lit(f"-{top}"))
    return alt(*parts)


# ---------------------------------------------------------------- strings


def _json_escaped(term: Term) -> Term:
    """A term over a string's characters as the same string inside JSON quotes."""
    if isinstance(term, Lit):
        return Lit(json.dumps(term.text, ensure_ascii=False)[1:-1])
    if isinstance(term, Cls):
        if term.negated:  # leaves out what JSON must escape: a subset, which is enough
            return Cls(tuple(sorted({*term.ranges, *_SPECIALS})), negated=True)
        plain = _minus(term.ranges, _SPECIALS)
        escapes = [Lit(json.dumps(c)[1:-1]) for c in _ESCAPES if term.allows(c)]
        return alt(*([Cls(plain)] if plain else []), *escapes)
    if isinstance(term, Seq):
        return seq(*(_json_escaped(t) for t in term.items))
    if isinstance(term, Alt):
        return alt(*(_json_escaped(t) for t in term.options))
    if isinstance(term, Rep):
        return Rep(_json_escaped(term.item), term.lo, term.hi)
    raise AssertionError(f"unexpected term {term!r}")


def _minus(
    ranges: tuple[tuple[int, int], ...], cut: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    out = list(ranges)
    for c_lo, c_hi in cut:
        next_out = []
        for lo, hi in out:
            if hi < c_lo or lo > c_hi:
                next_out.append((lo, hi))
                continue
            if lo < c_lo:
                next_out.append((lo, c_lo - 1))
            if hi > c_hi:
                next_out.append((c_hi + 1, hi))
        out = next_out
    return tuple(out)


def _lengths(term: Term) -> tuple[int, int | None]:
    """Fewest and most characters ``term`` matches (None: no limit)."""
    if isinstance(term, Lit):
        return len(term.text), len(term.text)
    if isinstance(term, Cls):
        return 1, 1
    if isinstance(term, Seq):
        bounds = [_lengths(t) for t in term.items]
        highs = [h for _, h in bounds]
        return sum(lo for lo, _ in bounds), None if None in highs else sum(h or 0 for h in highs)
    if isinstance(term, Alt):
        bounds = [_lengths(t) for t in term.options]
        highs = [h for _, h in bounds]
        return min(lo for lo, _ in bounds), None if None in highs else max(h or 0 for h in highs)
    if isinstance(term, Rep):
        lo, hi = _lengths(term.item)
        top = None if term.hi is None or hi is None else term.hi * hi
        return term.lo * lo, top
    raise AssertionError(f"unexpected term {term!r}")


def _wide_positions(term: Term) -> int:
    if isinstance(term, Seq):
        return sum(_wide_positions(t) for t in term.items)
    if isinstance(term, Alt):
        return sum(_wide_positions(t) for t in term.options)
    if isinstance(term, Rep):
        inner = _wide_positions(term.item)
        counted = max(term.lo, term.hi or 0)
        wide = isinstance(term.item, Cls) and term.item.size() > 16
        return inner * max(counted, 1) + (counted if wide and counted > 1 else 0)
    return 0


# ---------------------------------------------------------------- oneOf


def _kinds(model: SchemaModel, node: Node, budget: Budget | None) -> set[str]:
    if budget is not None:
        budget.spend()  # nested unions that share '$ref's branch on every level
    node = model.resolve(node)
    if isinstance(node, AnyNode):
        return {"null", "boolean", "number", "string", "array", "object"}
    if isinstance(node, ConstNode):
        return {_kind_of(v) for v in node.values}
    if isinstance(node, UnionNode):
        return set().union(*(_kinds(model, o, budget) for o in node.options))
    kinds: dict[type, str] = {
        NullNode: "null",
        BoolNode: "boolean",
        IntNode: "number",
        NumNode: "number",
        StrNode: "string",
        ArrNode: "array",
        ObjNode: "object",
    }
    return {kinds[type(node)]}  # fmt: skip


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    kinds: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return kinds[type(value)]


def _disjoint(model: SchemaModel, options: tuple[Node, ...], budget: Budget | None) -> bool:
    """Whether no value can match two of ``options`` (by type, constants or a discriminator)."""
    for i, a in enumerate(options):
        for b in options[i + 1 :]:
            if not _apart(model, model.resolve(a), model.resolve(b), budget):
                return False
    return True


def _apart(model: SchemaModel, a: Node, b: Node, budget: Budget | None) -> bool:
    if not _kinds(model, a, budget) & _kinds(model, b, budget):
        return True
    if isinstance(a, ConstNode) and isinstance(b, ConstNode):
        texts = {json.dumps(v, sort_keys=True) for v in a.values}
        return not texts & {json.dumps(v, sort_keys=True) for v in b.values}
    if isinstance(a, ObjNode) and isinstance(b, ObjNode):
        left, right = dict(a.properties), dict(b.properties)
        for name in a.required & b.required:
            x, y = model.resolve(left[name]), model.resolve(right[name])
            if (
                isinstance(x, ConstNode)
                and isinstance(y, ConstNode)
                and _apart(model, x, y, budget)
            ):
                return True
    return False
