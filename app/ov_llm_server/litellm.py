"""A LiteLLM ``model_list`` that routes every registry model to this server."""

from __future__ import annotations

import json

from .registry import RegistryWatcher
from .settings import Settings

CAPABILITIES = (
    "supports_function_calling",
    "supports_parallel_function_calling",
    "supports_tool_choice",
    "supports_response_schema",
)


def render_config(settings: Settings, api_base: str | None = None) -> str:
    base = api_base or f"http://{settings.host}:{settings.port}/v1"
    registry = RegistryWatcher(settings.registry_path)
    names = sorted(registry.entries())
    fallback = settings.fallback_model_name()
    if fallback is not None and not names:
        names = [fallback]
    key = "os.environ/OV_API_KEY" if settings.resolved_api_key() else "none"
    lines = ["model_list:"]
    for name in names:
        # json.dumps gives a correctly quoted YAML scalar for any name.
        lines += [
            f"  - model_name: {json.dumps(name)}",
            "    litellm_params:",
            f"      model: {json.dumps('openai/' + name)}",
            f"      api_base: {json.dumps(base)}",
            f"      api_key: {json.dumps(key)}",
            # What this server does for every model, so LiteLLM (and clients asking it
            # through /model/info) do not drop or refuse tools and response_format.
            "    model_info:",
            *(f"      {flag}: true" for flag in CAPABILITIES),
        ]
    if not names:
        lines[0] = "model_list: []"
    return "\n".join(lines) + "\n"
