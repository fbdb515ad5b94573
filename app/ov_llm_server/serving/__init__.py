"""Serving the API in the HTTP process: a request in, an engine's work through, an answer out.

* ``common``: what every endpoint does besides its own work: admission (the model's kind
  first), the deadline, the client leaving, and the one way a request ends (lease, metrics,
  log line);
* ``generation``: what chat and completions share: one engine stream, as SSE or whole;
* ``chat``, ``completions``: their checks and wire shapes;
* ``embeddings``, ``rerank``, ``speech``, ``tokenize``: one request, one engine reply.
* ``responses``, ``anthropic_messages``: OpenAI's Responses and Anthropic's Messages APIs,
  translated into chat requests and back (``chat_view``); ``response_store`` keeps Responses
  answers for ``previous_response_id``.
"""

from __future__ import annotations

from .chat import ChatService
from .completions import CompletionService
from .embeddings import EmbeddingService
from .rerank import RerankService
from .speech import SpeechService
from .tokenize import DetokenizeService, TokenizeService

__all__ = [
    "ChatService",
    "CompletionService",
    "DetokenizeService",
    "EmbeddingService",
    "RerankService",
    "SpeechService",
    "TokenizeService",
]
