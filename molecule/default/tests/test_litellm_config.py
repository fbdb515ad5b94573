"""playbooks/litellm.yml (molecule/default/fleet.yml): the LiteLLM configuration on the node."""

from __future__ import annotations

import pytest
import yaml
from test_service import MODEL

pytestmark = pytest.mark.service

CONFIG = "/etc/litellm/config.yaml"


def test_config_file(host):
    config = host.file(CONFIG)
    assert config.is_file
    assert (config.user, config.group, config.mode) == ("root", "root", 0o644)


def test_config_routes_the_node_models_with_their_capabilities(host):
    config = yaml.safe_load(host.file(CONFIG).content_string)
    # Every node of llm_nodes serves the model: one deployment each, under one model name,
    # so that LiteLLM's router spreads the load and fails over between them.
    deployments = config["model_list"]
    assert len(deployments) == 2
    assert {d["model_name"] for d in deployments} == {MODEL}
    bases = [d["litellm_params"]["api_base"] for d in deployments]
    assert len(set(bases)) == 2
    # The nodes in name order, whichever order the run built its group in: an unchanged
    # fleet must render the same file (the idempotence run checks that only by chance).
    assert bases == sorted(bases)
    deployment = deployments[0]
    params = deployment["litellm_params"]
    assert params["model"] == f"openai/{MODEL}"
    assert params["api_base"].endswith(":8000/v1")
    assert params["api_key"] == "none"  # the node has no key
    # SmolLM2's chat template has no tools; its GGUF says 8192 tokens of context.
    assert deployment["model_info"] == {
        "mode": "chat",
        "max_input_tokens": 8192,
        "max_output_tokens": 4096,
        "supports_function_calling": False,
        "supports_parallel_function_calling": False,
        "supports_tool_choice": False,
        "supports_response_schema": True,
        "supports_reasoning": False,
        "supports_vision": False,
        # LiteLLM forwards these doors to a chat model as they are.
        "supported_endpoints": [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/responses",
            "/v1/messages",
        ],
    }
    assert config["router_settings"]["num_retries"] == 3
