"""``maxLength`` applied to JSON text as it streams.

The grammar does not count a string's characters (see grammar.py), so constrained output may
write a string longer than its ``maxLength``, and :func:`schema.repair` cuts it once the
document is whole. Held back until then, a document (or a forced call's arguments) reaches the
client only after the model's last token. :class:`LengthCut` makes the same cut as the text
streams: it walks the JSON beside the schema and drops a string's characters past its
``maxLength``, so each piece that goes out is already a prefix of the repaired document.

It reads the layout the grammar admits (``json.dumps``'s, whose string escapes are one
character each: the grammar admits no ``\\u`` escape), and it needs to know which schema node
each string belongs to: :func:`streams` says whether that is known before the string ends,
which it is unless a ``maxLength`` string sits under an ``anyOf``/``oneOf`` (whose option
:func:`schema.repair` picks from the whole value).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .schema import ArrNode, Node, ObjNode, RefNode, SchemaModel, StrNode, UnionNode


def _cut_length(node: Node | None) -> int | None:
    if isinstance(node, StrNode) and node.pattern is None and node.format is None:
        return node.max_length
    return None


def streams(model: SchemaModel) -> bool:
    """Whether :class:`LengthCut` can repair output of this schema as it streams."""
    cuts: dict[int, bool] = {}
    fine: dict[int, bool] = {}

    def walk(node: Node, memo: dict[int, bool], at_union: bool) -> bool:
        # Memoised by node (schemas are graphs: refs and shared parts). A cycle adds nothing:
        # it reads as "no cut below" and "fine".
        if id(node) in memo:
            return memo[id(node)]
        memo[id(node)] = not at_union
        if isinstance(node, RefNode):
            result = walk(model.defs[node.pointer], memo, at_union)
        elif at_union:  # does some string below need a cut?
            below = node.options if isinstance(node, UnionNode) else _children(node)
            result = _cut_length(node) is not None or any(walk(n, memo, True) for n in below)
        elif isinstance(node, UnionNode):
            result = not walk(node, cuts, True)
        else:
            result = all(walk(child, memo, False) for child in _children(node))
        memo[id(node)] = result
        return result

    return walk(model.root, fine, False)


def _children(node: Node) -> list[Node]:
    if isinstance(node, ObjNode):
        return [n for _, n in node.properties] + ([node.additional] if node.additional else [])
    if isinstance(node, ArrNode):
        return [*node.prefix, *([node.items] if node.items is not None else [])]
    return []


@dataclass
class _Open:
    """An open object or array, with what its next value is checked against."""

    node: Node | None
    is_object: bool
    index: int = 0  # arrays: the next item's position
    key: str | None = None  # objects: the key whose value comes next


class LengthCut:
    """Drops the characters of strings past their ``maxLength`` from JSON text fed in pieces."""

    def __init__(self, model: SchemaModel) -> None:
        self._model = model
        self._open: list[_Open] = []
        self._next: Node | None = model.root  # the node of the value that starts next
        self._in_string = False
        self._escaped = False
        self._in_key = False
        self._key: list[str] = []
        self._limit: int | None = None  # of the string being read
        self._count = 0
        self._keeping = True  # whether the current escape's characters are kept

    def feed(self, text: str) -> str:
        return "".join(char for char in text if self._keep(char))

    def _keep(self, char: str) -> bool:
        if self._in_string:
            return self._string_char(char)
        if char == '"':
            self._in_string = True
            top = self._open[-1] if self._open else None
            self._in_key = top is not None and top.is_object and top.key is None
            self._key = []
            self._limit = None if self._in_key else _cut_length(self._resolve(self._next))
            self._count = 0
        elif char in "{[":
            self._open.append(_Open(self._resolve(self._next), char == "{"))
            self._next = self._item(self._open[-1]) if char == "[" else None
        elif char in "}]":
            if self._open:
                self._open.pop()
        elif char == ",":
            if self._open:
                top = self._open[-1]
                if top.is_object:
                    top.key = None
                else:
                    top.index += 1
                    self._next = self._item(top)
        return True

    def _string_char(self, char: str) -> bool:
        if self._escaped:
            self._escaped = False
            if self._in_key:
                self._key.append("\\" + char)
            return self._keeping
        if char == "\\":
            self._escaped = True
            return self._counted()
        if char == '"':
            self._in_string = False
            if self._in_key:
                self._close_key()
            return True
        if self._in_key:
            self._key.append(char)
        return self._counted()

    def _counted(self) -> bool:
        """Counts one more character of the string; whether it is within the limit."""
        self._count += 1
        self._keeping = self._in_key or self._limit is None or self._count <= self._limit
        return self._keeping

    def _close_key(self) -> None:
        top = self._open[-1]
        top.key = json.loads('"' + "".join(self._key) + '"')
        node = top.node
        if isinstance(node, ObjNode):
            self._next = dict(node.properties).get(top.key, node.additional)
        else:
            self._next = None

    def _item(self, top: _Open) -> Node | None:
        node = top.node
        if not isinstance(node, ArrNode):
            return None
        return node.prefix[top.index] if top.index < len(node.prefix) else node.items

    def _resolve(self, node: Node | None) -> Node | None:
        return None if node is None else self._model.resolve(node)
