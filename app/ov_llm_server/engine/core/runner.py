"""What the engine loop asks of a model, whatever its kind (``llm``, ``embed``, ``rerank``)."""

from __future__ import annotations

from typing import Protocol

from ..messages import Generate, Output, Reply, Work
from .tokens import Vocabulary

# What a runner hands back to the loop: a generation's output, or a one-shot reply.
Result = Output | Reply


class Runner(Protocol):
    """One loaded model. Only the engine loop calls it, from one thread."""

    # The requests it serves; the loop refuses the others.
    accepts: tuple[type[Generate | Work], ...]
    vocabulary: Vocabulary
    chat_template: str
    context_length: int | None
    dimension: int | None

    @property
    def busy(self) -> bool:
        """Work waits for :meth:`step`."""

    def add(self, message: Generate | Work) -> Result | None:
        """Takes a request; what it returns (an acknowledgement, a refusal) goes out at once."""

    def step(self) -> list[Result]:
        """One pipeline call for what waits. An exception here means the pipeline is broken."""

    def cancel(self, rid: int) -> Result | None: ...

    def cancel_all(self) -> list[Result]: ...

    def fail_all(self, error: str) -> list[Result]:
        """Ends every request with an error (the engine is about to exit)."""
