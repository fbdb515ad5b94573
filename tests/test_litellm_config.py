"""``ov-llm-server litellm-config``: the configuration it writes, without starting LiteLLM.

tests/test_router.py starts a real LiteLLM proxy from it; these cover the mapping and the
command line quickly.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from live_server import write_registry
from ov_llm_server.cli import main
from ov_llm_server.litellm import FleetNode, RouterOptions, build_config, model_info, read_fleet
from ov_llm_server.protocol import ModelCard


def card(name: str = "m", **facts: Any) -> ModelCard:
    return ModelCard(id=name, created=0, **facts)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    main(["litellm-config", *args])
    config: dict[str, Any] = yaml.safe_load(capsys.readouterr().out)
    return config


@pytest.fixture
def registry(tmp_path: Path, tiny_ir_int8: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "registry.json"
    write_registry(path, {"tiny": {"path": str(tiny_ir_int8)}})
    monkeypatch.setenv("OV_REGISTRY_PATH", str(path))
    for name in ("OV_API_KEY", "OV_API_KEY_FILE", "OV_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_model_info_per_mode() -> None:
    chat = card(mode="chat", context_length=8192, max_output_tokens=4096)
    chat.capabilities = ["reasoning", "response_schema"]
    assert model_info(chat) == {
        "mode": "chat",
        "max_input_tokens": 8192,
        "max_output_tokens": 4096,
        "supports_function_calling": False,
        "supports_parallel_function_calling": False,
        "supports_tool_choice": False,
        "supports_response_schema": True,
        "supports_reasoning": True,
        "supports_vision": False,
        "supported_endpoints": [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/responses",
            "/v1/messages",
        ],
    }
    assert model_info(card(mode="embedding", context_length=512, dimension=384)) == {
        "mode": "embedding",
        "max_input_tokens": 512,
        "output_vector_size": 384,
    }
    assert model_info(card(mode="rerank")) == {"mode": "rerank"}
    assert model_info(card(mode="completion", max_output_tokens=4096)) == {
        "mode": "completion",
        "max_output_tokens": 4096,
        "supports_function_calling": False,
        "supports_parallel_function_calling": False,
        "supports_tool_choice": False,
        "supports_response_schema": False,
        "supports_reasoning": False,
        "supports_vision": False,
    }
    # A card of an older server says nothing: nothing is claimed.
    assert model_info(card()) == {}


def test_every_model_on_every_node_and_the_key_by_reference(
    registry: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OV_API_KEY", "sk-secret-of-the-nodes")
    bases = ["http://n1:8000/v1", "http://n2:8000/v1"]
    config = run_cli(capsys, "--api-base", bases[0], "--api-base", bases[1])
    assert [d["litellm_params"]["api_base"] for d in config["model_list"]] == bases
    assert {d["litellm_params"]["api_key"] for d in config["model_list"]} == {
        "os.environ/OV_API_KEY"
    }
    main(["litellm-config", "--api-base", bases[0]])
    assert "sk-secret-of-the-nodes" not in capsys.readouterr().out


def test_without_api_base_the_server_itself(
    registry: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OV_PORT", "8123")
    config = run_cli(capsys)
    (deployment,) = config["model_list"]
    assert deployment["litellm_params"] == {
        "model": "openai/tiny",
        "api_base": "http://127.0.0.1:8123/v1",
        "api_key": "none",
    }


def test_the_fallback_model_is_routed_too(
    registry: Path,
    smollm2_gguf: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OV_MODEL_PATH", str(smollm2_gguf))
    config = run_cli(capsys, "--api-base", "http://n1:8000/v1")
    info = {d["model_name"]: d["model_info"] for d in config["model_list"]}
    assert set(info) == {"tiny", "SmolLM2-135M-Instruct.Q4_1"}
    assert info["SmolLM2-135M-Instruct.Q4_1"]["supports_function_calling"] is False


def test_router_settings_from_options(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = run_cli(capsys, "--num-retries", "5", "--allowed-fails", "2", "--cooldown-time", "10")
    assert config["router_settings"] == {
        "routing_strategy": "simple-shuffle",
        "num_retries": 5,
        "allowed_fails": 2,
        "cooldown_time": 10.0,
        "enable_weighted_failover": True,
        "retry_policy": {"RateLimitErrorRetries": 5, "ServiceUnavailableErrorRetries": 1},
        "timeout": 600.0,
    }


def test_fleet_from_the_nodes_answers(
    registry: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Node 1 serves both models, node 2 one of them; names that YAML would read as
    # something else stay strings.
    chat = {"object": "model", "created": 0, "mode": "chat", "capabilities": ["tools"]}
    fleet = [
        {
            "api_base": "http://n1:8000/v1",
            "api_key_env": "KEY_OF_N1",
            "models": {"object": "list", "data": [{**chat, "id": "yes"}, {**chat, "id": "1.0"}]},
        },
        {"api_base": "http://n2:8000/v1", "models": [{**chat, "id": "yes"}]},
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(fleet)))
    config = run_cli(capsys, "--fleet", "-")
    assert [
        (d["model_name"], d["litellm_params"]["api_base"], d["litellm_params"]["api_key"])
        for d in config["model_list"]
    ] == [
        ("1.0", "http://n1:8000/v1", "os.environ/KEY_OF_N1"),
        ("yes", "http://n1:8000/v1", "os.environ/KEY_OF_N1"),
        ("yes", "http://n2:8000/v1", "none"),
    ]
    assert config["model_list"][0]["model_info"]["supports_tool_choice"] is True


def test_each_kind_gets_its_mode_and_a_provider_that_serves_it(
    tmp_path: Path,
    tiny_ir_int8: Path,
    tiny_encoders: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Health checks call what ``mode`` says; rerank goes through hosted_vllm, which posts
    to ``<api_base>/rerank`` (LiteLLM's openai provider has no rerank)."""
    path = tmp_path / "registry.json"
    write_registry(
        path,
        {
            "chat": {"path": str(tiny_ir_int8)},
            "emb": {"path": str(tiny_encoders["embedder-mean/fp16"]), "task": "feature-extraction"},
            "rr": {"path": str(tiny_encoders["reranker/fp16"]), "task": "text-classification"},
        },
    )
    monkeypatch.setenv("OV_REGISTRY_PATH", str(path))
    monkeypatch.delenv("OV_MODEL_PATH", raising=False)
    config = run_cli(capsys, "--api-base", "http://n1:8000/v1")
    deployments = {d["model_name"]: d for d in config["model_list"]}
    assert {name: d["model_info"]["mode"] for name, d in deployments.items()} == {
        "chat": "chat",
        "emb": "embedding",
        "rr": "rerank",
    }
    assert {name: d["litellm_params"]["model"] for name, d in deployments.items()} == {
        "chat": "openai/chat",
        "emb": "openai/emb",
        "rr": "hosted_vllm/rr",
    }
    # An encoder's input limit is its own maximum (48), not its position table's (128).
    assert deployments["emb"]["model_info"] == {
        "mode": "embedding",
        "max_input_tokens": 48,
        "output_vector_size": 64,
    }
    assert deployments["rr"]["model_info"] == {"mode": "rerank", "max_input_tokens": 48}


def test_api_key_env_per_node_or_for_all() -> None:
    nodes = [
        FleetNode(api_base="http://n1/v1", api_key_env="", models=[card("a")]),
        FleetNode(api_base="http://n2/v1", models=[card("a")]),
    ]
    config = build_config(nodes, RouterOptions(), "FLEET_KEY")
    keys = [d["litellm_params"]["api_key"] for d in config["model_list"]]
    assert keys == ["none", "os.environ/FLEET_KEY"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected a non-empty JSON list of nodes"),
        ('[{"models": []}]', "node 0: api_base: Field required"),
        ('[{"api_base": "http://n1/v1", "models": [{"id": "m"}]}]', "node 0: models.0.created"),
    ],
)
def test_bad_fleet_files_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_fleet(text, "fleet.json")


def test_cli_errors_are_one_line(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (
        ["--fleet", str(tmp_path / "missing.json")],
        ["--fleet", "-", "--api-base", "http://n1/v1"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["litellm-config", *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("ov-llm-server litellm-config: ") and err.count("\n") == 1
