"""A LiteLLM proxy configuration for one or several nodes running this server.

Every model gets one deployment per node under the same ``model_name``, so LiteLLM's
router balances them, retries a failed request on another node and cools a failing
node down. ``model_info`` says what each model really does (``capabilities.py``); this
module is the one place that maps those facts to LiteLLM's keys.

The models of each node come either from this machine's registry (every node serves the
same models: ``--api-base`` once per node) or from each node's own ``GET /v1/models``
collected into a fleet file (``--fleet``; ``playbooks/litellm.yml`` does that).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from .capabilities import card_facts
from .protocol import ModelCard
from .registry import RegistryWatcher, resolve_model_path
from .settings import Settings

# What a chat model serves here, as LiteLLM's model_info names endpoints.
CHAT_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")

HEADER = (
    "# LiteLLM proxy configuration written by `ov-llm-server litellm-config`.\n"
    "# Start it with: LITELLM_MASTER_KEY=sk-... litellm --config <this file>\n"
)


@dataclass(frozen=True)
class RouterOptions:
    """LiteLLM ``router_settings``; the defaults lost no request when a node died.

    Measured with LiteLLM 1.108.7 and two nodes (tests/test_router.py): a request that
    meets a dead, saturated (429) or unavailable (503) node is retried on the other one
    at once, and a node that fails more than ``allowed_fails`` times within
    ``cooldown_time`` seconds leaves the rotation for ``cooldown_time`` seconds, or for
    the ``Retry-After`` it answered.
    """

    num_retries: int = 3
    allowed_fails: int = 1
    cooldown_time: float = 30
    timeout: float = 600

    def settings(self) -> dict[str, Any]:
        return {
            "routing_strategy": "simple-shuffle",
            "num_retries": self.num_retries,
            "allowed_fails": self.allowed_fails,
            "cooldown_time": self.cooldown_time,
            # A failure is marked on its deployment in a background thread, so an instant
            # retry can pick the same dead node again; after the retries this sends the
            # request to the group's other deployments, never the one that just failed.
            "enable_weighted_failover": True,
            # Retried even when every node is sitting out, after the Retry-After they sent:
            # a saturated fleet (429, 1 s) gets a few seconds of patience, an unavailable
            # one (503, 30 s) one more try, not minutes of waiting.
            "retry_policy": {
                "RateLimitErrorRetries": self.num_retries,
                "ServiceUnavailableErrorRetries": 1,
            },
            "timeout": self.timeout,
        }


class FleetNode(BaseModel):
    """One node of a fleet file: where LiteLLM reaches it, and its ``/v1/models``."""

    api_base: str = Field(min_length=1)
    # The environment variable of LiteLLM's host holding this node's key; empty: no key.
    api_key_env: str | None = None
    models: list[ModelCard]


def provider_model(card: ModelCard) -> str:
    """LiteLLM's ``model`` for a deployment: its OpenAI-compatible provider for everything but
    rerank, which that provider lacks; ``hosted_vllm`` posts vLLM's (and this server's)
    rerank shape to ``<api_base>/rerank``."""
    provider = "hosted_vllm" if card.mode == "rerank" else "openai"
    return f"{provider}/{card.id}"


def model_info(card: ModelCard) -> dict[str, Any]:
    """LiteLLM's ``model_info`` for a model, from what its card says it does.

    ``mode`` is what LiteLLM's health checks call: a chat completion, a text completion, an
    embedding or a rerank.
    """
    info: dict[str, Any] = {}
    if card.mode is not None:
        info["mode"] = card.mode
    if card.context_length is not None:
        info["max_input_tokens"] = card.context_length
    if card.max_output_tokens is not None:
        info["max_output_tokens"] = card.max_output_tokens
    if card.mode == "embedding" and card.dimension is not None:
        info["output_vector_size"] = card.dimension
    if card.mode in ("chat", "completion"):
        tools = "tools" in card.capabilities
        # Written even when false: LiteLLM would otherwise look the name up in its own
        # price list, where a model called like a cloud model inherits its flags.
        info["supports_function_calling"] = tools
        info["supports_parallel_function_calling"] = tools
        info["supports_tool_choice"] = tools
        info["supports_response_schema"] = "response_schema" in card.capabilities
        info["supports_reasoning"] = "reasoning" in card.capabilities
        info["supports_vision"] = "vision" in card.capabilities
    if card.mode == "chat":
        # LiteLLM forwards /v1/responses here as is; "/v1/messages" listed makes it forward
        # Anthropic's API as is too, instead of bridging it onto /v1/responses, which drops
        # stop_sequences and top_k (measured with LiteLLM 1.108.7).
        info["supported_endpoints"] = list(CHAT_ENDPOINTS)
    if card.mode == "audio_speech":
        info["supported_endpoints"] = ["/v1/audio/speech"]
    return info


def build_config(
    nodes: Sequence[FleetNode], options: RouterOptions, api_key_env: str | None
) -> dict[str, Any]:
    """The whole configuration: deployments sorted by model, then by node as given.

    ``api_key_env`` is the key's variable for nodes whose entry names none; the key
    itself never appears, only LiteLLM's ``os.environ/NAME`` reference to it.
    """

    def api_key(node: FleetNode) -> str:
        name = node.api_key_env if node.api_key_env is not None else api_key_env
        # LiteLLM's openai client insists on some key; a node without one ignores it.
        return f"os.environ/{name}" if name else "none"

    deployments = [
        (card.id, index, node, card) for index, node in enumerate(nodes) for card in node.models
    ]
    model_list = [
        {
            "model_name": name,
            "litellm_params": {
                "model": provider_model(card),
                "api_base": node.api_base,
                "api_key": api_key(node),
            },
            "model_info": model_info(card),
        }
        for name, _, node, card in sorted(deployments, key=lambda d: (d[0], d[1]))
    ]
    return {"model_list": model_list, "router_settings": options.settings()}


def render(config: dict[str, Any]) -> str:
    body: str = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def local_cards(settings: Settings) -> list[ModelCard]:
    """The models this machine's registry (and fallback model) would list in /v1/models."""
    registry = RegistryWatcher(settings.registry_path)
    cards = [
        ModelCard(
            id=name,
            created=0,
            task=entry.task,
            weight_format=entry.weight_format,
            **card_facts(
                resolve_model_path(settings.registry_path, entry), entry, settings.max_tokens_limit
            ),
        )
        for name, entry in sorted(registry.entries().items())
    ]
    fallback = settings.fallback_model_name()
    if fallback is not None and settings.model_path is not None:
        if fallback not in {card.id for card in cards}:
            facts = card_facts(settings.model_path, None, settings.max_tokens_limit)
            cards.append(ModelCard(id=fallback, created=0, source="fallback", **facts))
    return cards


def read_fleet(text: str, source: str) -> list[FleetNode]:
    """Nodes from a fleet file: ``[{"api_base": ..., "models": <GET /v1/models body>}]``."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{source}: expected a non-empty JSON list of nodes")
    nodes = []
    for index, item in enumerate(raw):
        if isinstance(item, dict) and isinstance(item.get("models"), dict):
            item = {**item, "models": item["models"].get("data")}  # the whole response body
        try:
            nodes.append(FleetNode.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{source}: node {index}: {where}: {first['msg']}") from exc
    return nodes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RouterOptions()
    parser.add_argument(
        "--api-base",
        action="append",
        metavar="URL",
        help="URL LiteLLM uses to reach a node, e.g. http://node1:8000/v1; repeat it for "
        "every node serving this registry (default: this server's OV_HOST:OV_PORT)",
    )
    parser.add_argument(
        "--fleet",
        metavar="FILE",
        help="JSON list of nodes [{'api_base': URL, 'models': <GET /v1/models body>}] "
        "instead of this registry ('-' reads stdin)",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="environment variable LiteLLM reads the nodes' OV_API_KEY from (default: "
        "OV_API_KEY when this server has a key; none with --fleet)",
    )
    parser.add_argument(
        "--num-retries",
        type=int,
        default=defaults.num_retries,
        help="tries on other deployments after a failure (default: %(default)s)",
    )
    parser.add_argument(
        "--allowed-fails",
        type=int,
        default=defaults.allowed_fails,
        help="failures a node may have in a minute before its cooldown (default: %(default)s)",
    )
    parser.add_argument(
        "--cooldown-time",
        type=float,
        default=defaults.cooldown_time,
        help="seconds a failing node is left out, unless it sent Retry-After "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        help="seconds one try may take before it counts as failed (default: %(default)s)",
    )


def run(args: argparse.Namespace, settings: Settings) -> str:
    """The configuration text for parsed ``litellm-config`` arguments."""
    options = RouterOptions(
        num_retries=args.num_retries,
        allowed_fails=args.allowed_fails,
        cooldown_time=args.cooldown_time,
        timeout=args.timeout,
    )
    if args.fleet is not None:
        if args.api_base:
            raise ValueError("--api-base and --fleet exclude each other")
        source = "stdin" if args.fleet == "-" else args.fleet
        text = sys.stdin.read() if args.fleet == "-" else Path(args.fleet).read_text("utf-8")
        return render(build_config(read_fleet(text, source), options, args.api_key_env))
    cards = local_cards(settings)
    bases = args.api_base or [f"http://{settings.host}:{settings.port}/v1"]
    nodes = [FleetNode(api_base=base, models=cards) for base in dict.fromkeys(bases)]
    key_env = args.api_key_env
    if key_env is None and settings.resolved_api_key():
        key_env = "OV_API_KEY"
    return render(build_config(nodes, options, key_env))
