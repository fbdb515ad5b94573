"""The answers of ``/v1/responses`` kept for ``previous_response_id`` and ``GET``, in memory.

Bounded by count and by bytes, oldest out first; lost on restart. An answer larger than the
whole byte budget is not kept.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    # The conversation up to and including this answer, as chat messages (no instructions:
    # a continuation does not inherit them, as in OpenAI's API).
    conversation: list[dict[str, Any]]
    size: int


class ResponseStore:
    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0

    def put(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        size = len(json.dumps(response)) + len(json.dumps(conversation))
        if self.max_count == 0 or size > self.max_bytes:
            return
        self.delete(response["id"])
        self._items[response["id"]] = StoredResponse(response, conversation, size)
        self._bytes += size
        while len(self._items) > self.max_count or self._bytes > self.max_bytes:
            _, oldest = self._items.popitem(last=False)
            self._bytes -= oldest.size

    def get(self, response_id: str) -> StoredResponse | None:
        return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        gone = self._items.pop(response_id, None)
        if gone is None:
            return False
        self._bytes -= gone.size
        return True

    def __len__(self) -> int:
        return len(self._items)
