"""Read docker-compose.yml, .env.example and the Dockerfiles the way Docker would.

`ComposeService` gives the command, environment, health check and
dependencies of one compose service, falling back to its Dockerfile's CMD and
HEALTHCHECK as Docker does.

Compose variable interpolation (`${NAME}`, `${NAME:-default}`, `${NAME-default}`,
`${NAME:?message}`, `${NAME?message}` and `$$`) follows the Compose
specification's interpolation section. Dockerfile parsing covers what the
images here use: comments, line continuations and the JSON (exec) form of
CMD and HEALTHCHECK.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.servers import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# Container ports of the images that are not built from this repository.
IMAGE_PORTS = {
    "redis": 6379,
    "prom/pushgateway": 9091,
    "prom/prometheus": 9090,
    "grafana/grafana": 3000,
}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


class InterpolationError(ValueError):
    """Raised for a `${NAME:?message}` whose variable is unset or empty."""


def read_env_file(path: Path) -> dict[str, str]:
    """Return the KEY=VALUE lines of a compose .env file, without comments and blank lines."""
    variables = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, separator, value = stripped.partition("=")
        if not separator:
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        variables[name.strip()] = value.strip()
    return variables


def interpolate(text: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        value = variables.get(name)
        operator = match.group("operator")
        argument = match.group("argument") or ""
        if operator == ":-":
            return value if value else argument
        if operator == "-":
            return value if value is not None else argument
        if operator == ":?" and not value:
            raise InterpolationError(f"{name} is unset or empty: {argument}")
        if operator == "?" and value is None:
            raise InterpolationError(f"{name} is unset: {argument}")
        return value or ""

    return _VARIABLE.sub(replace, text)


def interpolate_tree(node: Any, variables: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, variables) for key, value in node.items()}
    return node


def load_compose(variables: dict[str, str]) -> dict[str, Any]:
    """Return docker-compose.yml with YAML merge keys applied and `variables` interpolated."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    return dict(interpolate_tree(document, variables))


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Return the instructions of a Dockerfile with continuation lines joined."""
    instructions = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def final_stage(path: Path) -> list[Instruction]:
    """Return the instructions after the last FROM: those that shape the image that runs."""
    instructions = dockerfile_instructions(path)
    starts = [index for index, item in enumerate(instructions) if item.keyword == "FROM"]
    return instructions[starts[-1] :] if starts else instructions


def exec_form(arguments: str, where: str) -> list[str]:
    """Parse the JSON array of a CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        raise ValueError(f"{where}: expected the JSON exec form, got {arguments!r}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where}: expected a JSON list of strings, got {arguments!r}")
    return value


def image_command(path: Path) -> list[str]:
    """Return the CMD of the image that `path` builds."""
    commands = [item for item in final_stage(path) if item.keyword == "CMD"]
    if not commands:
        raise ValueError(f"{path} has no CMD")
    return exec_form(commands[-1].arguments, f"{path} CMD")


def image_healthcheck(path: Path) -> list[str] | None:
    """Return the HEALTHCHECK command of the image as ["CMD", ...], or None for HEALTHCHECK NONE."""
    checks = [item for item in final_stage(path) if item.keyword == "HEALTHCHECK"]
    if not checks:
        raise ValueError(f"{path} has no HEALTHCHECK")
    arguments = checks[-1].arguments
    if arguments.strip().upper() == "NONE":
        return None
    _, separator, command = arguments.partition("CMD ")
    if not separator:
        raise ValueError(f"{path}: HEALTHCHECK without CMD: {arguments!r}")
    return ["CMD", *exec_form(command, f"{path} HEALTHCHECK")]


def option_value(command: list[str], option: str) -> str | None:
    """Return the value after `option` in an argument list, or None when it is absent."""
    for index, argument in enumerate(command[:-1]):
        if argument == option:
            return command[index + 1]
    return None


@dataclass
class ComposeService:
    name: str
    spec: dict[str, Any]

    @property
    def image_repository(self) -> str:
        return str(self.spec.get("image", "")).split(":")[0]

    @property
    def dockerfile(self) -> Path | None:
        build = self.spec.get("build")
        if build is None:
            return None
        if isinstance(build, str):
            return ROOT / build / "Dockerfile"
        return ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")

    @property
    def command(self) -> list[str]:
        command = self.spec.get("command")
        if command is not None:
            return list(command)
        if self.dockerfile is not None:
            return image_command(self.dockerfile)
        return []

    @property
    def environment(self) -> dict[str, str]:
        environment = self.spec.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        return {
            str(name): "" if value is None else str(value) for name, value in environment.items()
        }

    @property
    def healthcheck(self) -> list[str] | None:
        check = self.spec.get("healthcheck")
        if check is not None:
            if check.get("disable"):
                return None
            return list(check["test"])
        if self.dockerfile is not None:
            return image_healthcheck(self.dockerfile)
        return None

    @property
    def depends_on(self) -> dict[str, str]:
        depends = self.spec.get("depends_on") or {}
        if isinstance(depends, list):
            return dict.fromkeys(depends, "service_started")
        return {name: entry.get("condition", "service_started") for name, entry in depends.items()}

    @property
    def container_port(self) -> int | None:
        port = option_value(self.command, "--port")
        if port is not None:
            return int(port)
        return IMAGE_PORTS.get(self.image_repository)
