"""Environment variables, ports and probe paths in compose and Kubernetes match the services' code.

Every `VS_*` variable that docker-compose.yml, a Dockerfile or a built
Kubernetes overlay gives a container must be a field of the settings class of
the service that the container runs. pydantic-settings ignores unknown
variables, so a typo fails here instead of being ignored at run time. The values must also pass
the settings' own validation. Ports, probe paths and service URLs must name
ports that the services listen on and routes that they serve.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from services.classifier.settings import ClassifierSettings
from services.common.service_routes import router as model_service_router
from services.detector.settings import DetectorSettings
from services.gateway.api import router as gateway_router
from services.gateway.settings import GatewaySettings
from tests.compose_files import (
    ENV_EXAMPLE,
    ComposeService,
    final_stage,
    image_command,
    load_compose,
    option_value,
    read_env_file,
)
from tests.deploy_manifests import (
    DOCKERFILES,
    OVERLAYS,
    find_object,
    overlay_objects,
    pod_spec,
    workloads,
)
from tests.servers import ROOT

SETTINGS_CLASSES: dict[str, type[BaseSettings]] = {
    "VS_CLASSIFIER_": ClassifierSettings,
    "VS_DETECTOR_": DetectorSettings,
    "VS_GATEWAY_": GatewaySettings,
}
MONITOR_PREFIX = "VS_MONITOR_"
# The variables that the drift job reads, used while monitoring/ has no
# settings class with this prefix. Once it has one, the test uses that class.
MONITOR_CONTRACT = {
    "REDIS_URL",
    "PUSHGATEWAY_URL",
    "PROMETHEUS_URL",
    "MODEL_REPOSITORY",
    "REPORT_DIR",
}
ROUTES = {
    "model-service": {route.path for route in model_service_router.routes},  # type: ignore[attr-defined]
    "gateway": {route.path for route in gateway_router.routes},  # type: ignore[attr-defined]
}
URL_HOST_PORT = re.compile(r"^(?:https?|redis)://([A-Za-z0-9-]+):(\d+)(?:/|$)")
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "monitoring" / "grafana"


def monitor_settings_class() -> type[BaseSettings] | None:
    """Return the settings class in monitoring/ with the VS_MONITOR_ prefix, if there is one."""
    import monitoring

    for module_info in pkgutil.walk_packages(monitoring.__path__, "monitoring."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value.model_config.get("env_prefix") == MONITOR_PREFIX
            ):
                return value
    return None


def known_names(prefix: str) -> set[str]:
    """Return the variable names that the service with `prefix` reads."""
    if prefix == MONITOR_PREFIX:
        settings_class = monitor_settings_class()
        if settings_class is None:
            return {MONITOR_PREFIX + name for name in MONITOR_CONTRACT}
    else:
        settings_class = SETTINGS_CLASSES[prefix]
    return {prefix + field.upper() for field in settings_class.model_fields}


def expected_prefix(command: list[str]) -> str | None:
    """Return the settings prefix of the program that `command` runs, or None for other programs."""
    module = option_value(command, "-m")
    if module == "services.serve":
        return f"VS_{command[command.index('services.serve') + 1].upper()}_"
    if module is not None and module.startswith("monitoring.drift"):
        return MONITOR_PREFIX
    return None


@dataclass(frozen=True)
class ContainerEnv:
    """The VS_* environment of one container, wherever it was defined."""

    where: str
    command: list[str]
    environment: dict[str, str]


def compose_services() -> dict[str, ComposeService]:
    compose = load_compose(read_env_file(ENV_EXAMPLE))
    return {name: ComposeService(name, spec) for name, spec in compose["services"].items()}


def compose_containers() -> Iterator[ContainerEnv]:
    for name, service in compose_services().items():
        if service.dockerfile is None:
            continue
        yield ContainerEnv(f"docker-compose.yml {name}", service.command, service.environment)


def dockerfile_containers() -> Iterator[ContainerEnv]:
    for path in DOCKERFILES:
        environment = {}
        for item in final_stage(path):
            if item.keyword == "ENV":
                for pair in re.findall(r"(\w+)=(\S+)", item.arguments):
                    environment[pair[0]] = pair[1]
        yield ContainerEnv(path.name, image_command(path), environment)


def kubernetes_containers(overlay: str) -> Iterator[ContainerEnv]:
    objects = overlay_objects(overlay)
    for workload in workloads(objects):
        spec = pod_spec(workload)
        for container in spec["containers"]:
            environment = {
                entry["name"]: entry.get("value", "") for entry in container.get("env", [])
            }
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    config = find_object(objects, "ConfigMap", source["configMapRef"]["name"])
                    environment.update(config.get("data", {}))
                if "secretRef" in source:
                    secret = find_object(objects, "Secret", source["secretRef"]["name"])
                    environment.update(secret.get("stringData", {}))
            where = (
                f"{overlay} {workload['kind']}/{workload['metadata']['name']}/{container['name']}"
            )
            yield ContainerEnv(where, list(container.get("command", [])), environment)


def all_containers() -> list[ContainerEnv]:
    containers = [*compose_containers(), *dockerfile_containers()]
    for overlay in OVERLAYS:
        containers.extend(kubernetes_containers(overlay))
    return containers


def vs_variables(environment: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in environment.items() if name.startswith("VS_")}


@pytest.fixture(scope="module")
def containers() -> list[ContainerEnv]:
    return all_containers()


def test_containers_found(containers: list[ContainerEnv]) -> None:
    places = {container.where.split()[0] for container in containers}
    assert places == {"docker-compose.yml", *(path.name for path in DOCKERFILES), *OVERLAYS}
    prefixes = {expected_prefix(container.command) for container in containers}
    assert {*SETTINGS_CLASSES, MONITOR_PREFIX} <= prefixes


def test_variable_names_are_settings(containers: list[ContainerEnv]) -> None:
    problems = []
    for container in containers:
        prefix = expected_prefix(container.command)
        for name in vs_variables(container.environment):
            if prefix is None:
                problems.append(f"{container.where}: {name} set for a program with no settings")
            elif not name.startswith(prefix):
                problems.append(f"{container.where}: {name} does not start with {prefix}")
            elif name not in known_names(prefix):
                problems.append(f"{container.where}: {name} is not a setting of {prefix}*")
    assert not problems, "\n".join(problems)


def test_variable_values_are_valid(
    containers: list[ContainerEnv], monkeypatch: pytest.MonkeyPatch
) -> None:
    for container in containers:
        prefix = expected_prefix(container.command)
        settings_class = SETTINGS_CLASSES.get(prefix or "") or (
            monitor_settings_class() if prefix == MONITOR_PREFIX else None
        )
        if settings_class is None:
            continue
        with monkeypatch.context() as patch:
            for name in [name for name in os.environ if name.startswith("VS_")]:
                patch.delenv(name)
            for name, value in vs_variables(container.environment).items():
                patch.setenv(name, value)
            try:
                settings_class()
            except ValidationError as error:
                pytest.fail(f"{container.where}: {error}")


def test_service_urls_name_listening_ports() -> None:
    services = compose_services()
    for container in compose_containers():
        for name, value in vs_variables(container.environment).items():
            match = URL_HOST_PORT.match(value)
            if match is None:
                continue
            host, port = match.group(1), int(match.group(2))
            assert host in services, f"{container.where}: {name} names no service {host}"
            assert services[host].container_port == port, f"{container.where}: {name}={value}"
    for overlay in OVERLAYS:
        objects = overlay_objects(overlay)
        for container in kubernetes_containers(overlay):
            for name, value in vs_variables(container.environment).items():
                match = URL_HOST_PORT.match(value)
                if match is None:
                    continue
                service = find_object(objects, "Service", match.group(1))
                ports = {entry["port"] for entry in service["spec"]["ports"]}
                assert int(match.group(2)) in ports, f"{container.where}: {name}={value}"


def routes_of(command: list[str]) -> set[str]:
    service = command[command.index("services.serve") + 1]
    return ROUTES["gateway" if service == "gateway" else "model-service"]


def test_compose_healthchecks_hit_served_routes() -> None:
    for name, service in compose_services().items():
        if service.dockerfile is None or "services.serve" not in service.command:
            continue
        check = service.healthcheck
        assert check is not None, name
        url = check[-1]
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\w+)", url)
        assert match is not None, f"{name}: health check URL {url}"
        assert int(match.group(1)) == service.container_port, name
        assert match.group(2) in routes_of(service.command), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_ports_and_probes(overlay: str) -> None:
    objects = overlay_objects(overlay)
    for workload in workloads(objects):
        for container in pod_spec(workload)["containers"]:
            command = list(container.get("command", []))
            if "services.serve" not in command:
                continue
            where = f"{overlay} {workload['metadata']['name']}"
            ports = {entry["name"]: entry["containerPort"] for entry in container["ports"]}
            assert ports == {"http": int(option_value(command, "--port") or 0)}, where
            assert option_value(command, "--host") == "0.0.0.0", where
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in container:
                    continue
                action = container[probe]["httpGet"]
                assert action["port"] in ports, (where, probe)
                assert action["path"] in routes_of(command), (where, probe)
            service = find_object(objects, "Service", workload["metadata"]["name"])
            for entry in service["spec"]["ports"]:
                assert entry["targetPort"] in ports, where
                assert entry["port"] == ports[entry["targetPort"]], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitors_select_metrics_ports(overlay: str) -> None:
    objects = overlay_objects(overlay)
    services = [item for item in objects if item["kind"] == "Service"]
    for monitor in (item for item in objects if item["kind"] == "ServiceMonitor"):
        selected = [
            service for service in services if selects(monitor["spec"]["selector"], service)
        ]
        assert selected, monitor["metadata"]["name"]
        for service in selected:
            names = {entry["name"] for entry in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint["port"] in names, service["metadata"]["name"]


def selects(selector: dict[str, Any], item: dict[str, Any]) -> bool:
    labels = item["metadata"].get("labels", {})
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        if expression["operator"] != "In":
            raise ValueError(f"unsupported operator {expression['operator']}")
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def prometheus_targets() -> list[tuple[str, int]]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = []
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.partition(":")
                targets.append((host, int(port)))
    return targets


def test_prometheus_targets_exist_in_compose() -> None:
    services = compose_services()
    for host, port in prometheus_targets():
        assert host in services, f"prometheus.yml scrapes {host}, which compose does not define"
        assert services[host].container_port == port, f"{host}:{port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_targets_exist_in_kubernetes(overlay: str) -> None:
    objects = overlay_objects(overlay)
    for host, port in prometheus_targets():
        service = find_object(objects, "Service", host)
        assert port in {entry["port"] for entry in service["spec"]["ports"]}, f"{host}:{port}"


def test_compose_mounts_prometheus_config() -> None:
    volumes = compose_services()["prometheus"].spec["volumes"]
    assert "./monitoring/prometheus:/etc/prometheus:ro" in volumes
    command = compose_services()["prometheus"].command
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_compose_mounts_grafana_provisioning() -> None:
    provisioning = GRAFANA_DIR / "provisioning"
    volumes = compose_services()["grafana"].spec["volumes"]
    mounts = dict(str(volume).split(":")[:2] for volume in volumes)
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_target = mounts["./monitoring/grafana/dashboards"]
    providers = yaml.safe_load((provisioning / "dashboards" / "visionserve.yml").read_text())
    paths = {provider["options"]["path"] for provider in providers["providers"]}
    assert paths == {dashboards_target}
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    urls = {source["url"] for source in datasources["datasources"]}
    assert urls == {"http://prometheus:9090"}
