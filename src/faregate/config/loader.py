"""Load a YAML config: resolve environment references, validate, report errors by YAML path.

Values may read the environment the LiteLLM way (`os.environ/NAME` as the whole value) or the
shell way (`${NAME}` / `${NAME:-default}` anywhere in a string). Every error names the YAML
path (`model_list[0].litellm_params.model`) and, for a file, its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from faregate.config.schema import Config

_SHELL_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_LITELLM_REF = "os.environ/"

Path_ = tuple[str | int, ...]


class ConfigError(Exception):
    """One or more problems in a config, each as 'path (line N): message'."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        return "\n".join([f"{self.source}: {len(self.problems)} problem(s)"] + [f"  - {p}" for p in self.problems])


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_map(text: str) -> dict[Path_, int]:
    """Map each YAML path to its 1-based line, from the composed node tree."""
    lines: dict[Path_, int] = {}

    def walk(node: yaml.Node, path: Path_) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _resolve_env(node: Any, path: Path_, env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _resolve_env(v, path + (k,), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_env(v, path + (i,), env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    if node.startswith(_LITELLM_REF):
        name = node[len(_LITELLM_REF):]
        if name not in env:
            problems.append(f"{format_path(path)}: environment variable {name} is not set")
            return None
        return env[name]

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(f"{format_path(path)}: environment variable {name} is not set")
        return ""

    return _SHELL_REF.sub(sub, node) if "${" in node else node


def parse_config(data: Any, *, text: str | None = None, source: str = "config", env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document (a dict)."""
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping of sections, got {type(data).__name__}"], source)
    lines = _line_map(text) if text else {}
    problems: list[str] = []
    data = _resolve_env(data, (), env, problems)
    if problems:
        raise ConfigError([_with_line(p, None, lines) for p in problems], source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        out = []
        for err in exc.errors(include_url=False):
            path = tuple(p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-"))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see docs/config.md)"
            out.append(_with_line(f"{format_path(path)}: {msg}", path, lines))
        raise ConfigError(out, source) from None


def _with_line(problem: str, path: Path_ | None, lines: dict[Path_, int]) -> str:
    if path is None:
        return problem
    while path and path not in lines:
        path = path[:-1]
    line = lines.get(path)
    return f"{problem} (line {line})" if line else problem


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror or exc}"], str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"invalid YAML{where}: {problem}"], str(p)) from None
    return parse_config(data, text=text, source=str(p), env=env)
