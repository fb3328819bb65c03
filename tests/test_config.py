"""Config loading: LiteLLM files as they are, env references, errors by YAML path and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from faregate.config import ConfigError, load_config, parse_config
from faregate.routing.checks import check_deployments
from faregate.routing.deployment import build_deployments

LITELLM_CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      rpm: 100
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://example-eu.openai.azure.com
      api_key: ${AZURE_KEY}
      api_version: "2024-10-21"
      input_cost_per_token: 0.0000025
      output_cost_per_token: 0.00001
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: os.environ/ANTHROPIC_API_KEY
      timeout: 30
  - model_name: llama
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
      api_base: http://vllm:8000/v1
router_settings:
  num_retries: 3
  timeout: 45
  fallbacks: [{"gpt-4o": ["claude"]}]
  routing_strategy: simple-shuffle
  enable_pre_call_checks: true
general_settings:
  master_key: sk-1234
litellm_settings:
  drop_params: true
  success_callback: ["langfuse"]
"""

ENV = {"OPENAI_API_KEY": "sk-openai", "AZURE_KEY": "az-key", "ANTHROPIC_API_KEY": "sk-ant"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_litellm_config_loads_unchanged(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LITELLM_CONFIG), env=ENV)
    deps = build_deployments(config)
    assert [(d.group, d.provider, d.upstream_model) for d in deps] == [
        ("gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o", "azure", "gpt-4o-eu"),
        ("claude", "anthropic", "claude-sonnet-4-5"),
        ("llama", "openai", "meta-llama/Llama-3.1-8B-Instruct"),
    ]
    assert deps[0].api_base == "https://api.openai.com/v1"
    assert deps[0].api_key == "sk-openai" and deps[1].api_key == "az-key"
    assert deps[2].timeout == 30 and deps[0].timeout == 45  # deployment beats router_settings
    assert str(deps[1].input_cost_per_token) == "0.0000025"
    assert config.general_settings.master_key.get_secret_value() == "sk-1234"
    assert check_deployments(config) == []


def test_ignored_litellm_keys_are_reported(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LITELLM_CONFIG), env=ENV)
    ignored = config.ignored_keys()
    assert "router_settings.enable_pre_call_checks" in ignored
    assert "router_settings.routing_strategy" not in ignored  # LiteLLM's simple-shuffle is faregate's weighted
    assert config.router_settings.routing_strategy == "weighted"
    assert "litellm_settings.success_callback" in ignored


def test_secrets_never_appear_in_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LITELLM_CONFIG), env=ENV)
    deps = build_deployments(config)
    text = repr(config) + "".join(repr(d) for d in deps)
    for secret in ("sk-openai", "az-key", "sk-ant", "sk-1234"):
        assert secret not in text


def test_missing_env_var_names_path_and_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, LITELLM_CONFIG), env={"AZURE_KEY": "x"})
    assert "model_list[0].litellm_params.api_key: environment variable OPENAI_API_KEY is not set" in exc.value.problems


def test_shell_default_is_used_when_variable_unset() -> None:
    config = parse_config({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "${BASE:-http://h/v1}"}}]}, env={})
    assert config.model_list[0].litellm_params.api_base == "http://h/v1"


def test_invalid_value_error_names_yaml_path_and_line(tmp_path: Path) -> None:
    text = "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/m\n      rpm: -5\n"
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    (problem,) = exc.value.problems
    assert problem.startswith("model_list[0].litellm_params.rpm: ")
    assert problem.endswith("(line 5)")


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "model_list:\n  - model_name: m\n    litellm_params: {}\n"))
    assert any(p.startswith("model_list[0].litellm_params.model: Field required") for p in exc.value.problems)


def test_typo_in_faregate_section_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "server:\n  prot: 80\n"))
    assert exc.value.problems == ["server.prot: unknown key (check the spelling; see docs/config.md) (line 2)"]


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "model_list:\n  - model_name: [\n"))
    assert "invalid YAML (line" in exc.value.problems[0]


def test_deployment_problems_name_the_entry() -> None:
    config = parse_config({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "hosted_vllm/x"}},  # no api_base
            {"model_name": "b", "litellm_params": {"model": "azure/x", "api_base": "https://h"}},  # no api_version
        ],
        "router_settings": {"fallbacks": [{"a": ["nope"]}]},
    })
    problems = check_deployments(config)
    assert problems[0].startswith("model_list[0].litellm_params: deployment 'a#0' needs litellm_params.api_base")
    assert problems[1].startswith("model_list[1].litellm_params: deployment 'b#1' needs litellm_params.api_version")
    assert "router_settings.fallbacks: 'a -> nope' names no model group in model_list" in problems


def test_config_check_cli(tmp_path: Path) -> None:
    good = write(tmp_path, "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_base: 'http://h/v1'}\n")
    out = subprocess.run([sys.executable, "-m", "faregate", "config", "check", str(good)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, weight: -1}\n")
    out = subprocess.run([sys.executable, "-m", "faregate", "config", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "model_list[0].litellm_params.weight" in out.stdout and "(line 3)" in out.stdout


def test_serve_refuses_open_gateway_on_public_address(tmp_path: Path) -> None:
    cfg = write(tmp_path, "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_base: 'http://h/v1'}\n")
    out = subprocess.run([sys.executable, "-m", "faregate", "serve", "--config", str(cfg), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 2
    assert "--insecure" in out.stderr
