"""What the compose-file unit tests share: compose's variable interpolation, the Compose
Specification schema (vendored from the PyPI package check-jsonschema 0.39.0, Apache-2.0, under
tests/schemas/; see NOTICE.compose-spec there) and compose's durations.
"""

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

SCHEMA_FILE = Path(__file__).parents[1] / "schemas" / "compose-spec.json"

Document = dict[str, Any]

# Compose's variable syntax: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error}, ${NAME:+alternative}, ${NAME+alternative}.
VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<operator>:?[-?+])(?P<argument>.*))?", re.S)


def interpolate(node: Any, environment: Mapping[str, str]) -> Any:
    """What compose does to every value before it validates the file (not nested defaults)."""
    if isinstance(node, dict):
        return {key: interpolate(value, environment) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, environment) for value in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return environment.get(match["named"], "")
        braced = BRACED.fullmatch(match["braced"])
        assert braced is not None, f"unsupported variable syntax: {match[0]!r}"
        name, operator, argument = braced["name"], braced["operator"], braced["argument"]
        value = environment.get(name)
        if operator is None:
            return value or ""
        # With a colon, an empty value counts as unset.
        is_set = value is not None and (value != "" or not operator.startswith(":"))
        if operator.endswith("-"):
            return value if is_set and value is not None else argument
        if operator.endswith("+"):
            return argument if is_set else ""
        if not is_set:
            raise ValueError(f"{name} is required: {argument}")
        return value or ""

    return VARIABLE.sub(substitute, node)


def load(path: Path, environment: Mapping[str, str] | None = None) -> Document:
    """A compose file as written (environment None), or as compose reads it with
    `environment`'s variables substituted."""
    document: Document = yaml.safe_load(path.read_text())
    if environment is None:
        return document
    interpolated: Document = interpolate(document, environment)
    return interpolated


def compose_validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors_of(validator: Draft202012Validator, document: Document) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def merged(base: Document, override: Document) -> Document:
    """An override file on top of a compose file, one level deep per service (enough for the
    local overrides, which set image, build args, command and healthcheck)."""
    document: Document = json.loads(json.dumps(base))
    for name, service in override["services"].items():
        target = document["services"][name]
        for key, value in service.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
    return document


def seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, f"not a compose duration: {duration!r}"
    assert "".join(number + unit for number, unit in parts) == duration
    return sum(float(number) * units[unit] for number, unit in parts)
