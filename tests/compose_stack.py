"""Run the services of docker-compose.yml as local processes, without Docker.

Each service built from this repository runs its compose `command`, or else
its Dockerfile's CMD, with the compose environment. Redis, the Pushgateway
and Prometheus run as the local `redis-server`, `prometheus-pushgateway` and
`prometheus` programs with the compose arguments. Everything listens on
127.0.0.1 on free ports:

- `<service>:<port>` in an environment value or command becomes
  `127.0.0.1:<free port>`, and `--host`/`--port` options are replaced;
- a volume's or tmpfs' container path becomes a folder under the work folder;
- a bind mount's source is resolved against the repository. A read-only bind
  mount of a folder is copied, with the host names in its configuration files
  rewritten;
- `depends_on` conditions are honoured, and health checks run the compose (or
  Dockerfile) health check command locally with the same rewriting.

A service whose program is missing here is not started, and `skipped`
records the reason: Grafana, for example, has no local stand-in. Its host
name still maps to a port on which nothing listens.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.compose_files import ComposeService, option_value
from tests.servers import ROOT, Server, free_port

LOCAL_PROGRAMS = {
    "redis": "redis-server",
    "prom/pushgateway": "prometheus-pushgateway",
    "prom/prometheus": "prometheus",
}
# Files in read-only bind mounts whose service host names are rewritten.
CONFIG_SUFFIXES = {".yml", ".yaml", ".json"}
# Settings the test process must not pass on, so that each service gets only
# what the compose file gives it.
ISOLATED_PREFIXES = ("VS_",)


class ComposeRunError(RuntimeError):
    """Raised when a service exits, fails or does not become healthy as its conditions require."""


@dataclass
class ComposeRun:
    """Local processes for the services of one compose file, started in dependency order."""

    services: dict[str, ComposeService]
    work_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    _mounts: dict[str, dict[str, Path]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for service in self.services.values():
            if service.container_port is not None:
                self.ports[(service.name, service.container_port)] = free_port()
        names = "|".join(re.escape(name) for name in sorted(self.services, key=len, reverse=True))
        self._host_pattern = re.compile(rf"(?<![\w.-])({names}):(\d+)\b")

    # Rewriting ---------------------------------------------------------------

    def local_port(self, service: str) -> int:
        port = self.services[service].container_port
        if port is None:
            raise KeyError(f"service {service} listens on no known port")
        return self.ports[(service, port)]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.local_port(service)}"

    def rewrite_hosts(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            key = (match.group(1), int(match.group(2)))
            return f"127.0.0.1:{self.ports[key]}" if key in self.ports else match.group(0)

        return self._host_pattern.sub(replace, text)

    def mounts(self, service: ComposeService) -> dict[str, Path]:
        """Return container path to local folder for the volumes and tmpfs of `service`.

        A read-only bind mount of a folder becomes a copy in which the service
        host names of the configuration files point at the local ports.
        """
        if service.name in self._mounts:
            return self._mounts[service.name]
        mounts: dict[str, Path] = {}
        for entry in service.spec.get("volumes", []):
            source, target, *options = str(entry).split(":")
            if not source.startswith((".", "/")):
                mounts[target] = self.work_dir / "volumes" / source
                mounts[target].mkdir(parents=True, exist_ok=True)
                continue
            local = (ROOT / source).resolve()
            read_only = bool(options) and "ro" in options[0].split(",")
            if read_only and local.is_dir():
                local = self.copy_with_local_hosts(local, service)
            mounts[target] = local
        for target in service.spec.get("tmpfs", []):
            folder = self.work_dir / "tmpfs" / service.name / str(target).strip("/")
            folder.mkdir(parents=True, exist_ok=True)
            mounts[str(target)] = folder
        self._mounts[service.name] = mounts
        return mounts

    def copy_with_local_hosts(self, source: Path, service: ComposeService) -> Path:
        copy = self.work_dir / "binds" / service.name / source.name
        shutil.copytree(source, copy, dirs_exist_ok=True)
        for path in copy.rglob("*"):
            if path.suffix in CONFIG_SUFFIXES:
                path.write_text(self.rewrite_hosts(path.read_text()))
        return copy

    def rewrite_paths(self, text: str, mounts: dict[str, Path]) -> str:
        if not mounts:
            return text
        targets = sorted(mounts, key=len, reverse=True)
        pattern = re.compile(r"(?<![\w/.])(" + "|".join(map(re.escape, targets)) + r")(?=/|$)")
        return pattern.sub(lambda match: str(mounts[match.group(1)]), text)

    def rewrite(self, text: str, service: ComposeService) -> str:
        return self.rewrite_paths(self.rewrite_hosts(text), self.mounts(service))

    def local_command(self, service: ComposeService) -> list[str]:
        command = [self.rewrite(argument, service) for argument in service.command]
        if "--host" in command:
            command[command.index("--host") + 1] = "127.0.0.1"
        if "--port" in command:
            command[command.index("--port") + 1] = str(self.local_port(service.name))
        if command and command[0] == "python":
            return [sys.executable, *command[1:]]
        program = LOCAL_PROGRAMS.get(service.image_repository)
        if program == "redis-server":
            arguments = command[1:] if command and command[0] == "redis-server" else command
            port = str(self.local_port(service.name))
            return [program, *arguments, "--port", port, "--bind", "127.0.0.1"]
        if program in {"prometheus-pushgateway", "prometheus"}:
            address = f"127.0.0.1:{self.local_port(service.name)}"
            local = [program, *command, f"--web.listen-address={address}"]
            if program == "prometheus-pushgateway":
                # Debian's build persists to a shared file under /var/lib by
                # default; the upstream image keeps metrics in memory only.
                local.append("--persistence.file=")
            return local
        return command

    def local_healthcheck(self, service: ComposeService) -> list[str] | None:
        test = service.healthcheck
        if test is None or test == ["NONE"]:
            return None
        if test[0] == "CMD-SHELL":
            return ["sh", "-c", self.rewrite_own_address(test[1], service)]
        if test[0] != "CMD":
            raise ValueError(f"{service.name}: unsupported health check form {test!r}")
        command = [self.rewrite_own_address(argument, service) for argument in test[1:]]
        if command[0] == "python":
            command[0] = sys.executable
        if command[0] == "redis-cli":
            port = str(self.local_port(service.name))
            command = ["redis-cli", "-h", "127.0.0.1", "-p", port, *command[1:]]
        return command

    def rewrite_own_address(self, text: str, service: ComposeService) -> str:
        """Point `127.0.0.1:<container port>` or `localhost:<port>` at the service's local port."""
        port = service.container_port
        if port is None:
            return text
        local = f"127.0.0.1:{self.local_port(service.name)}"
        return re.sub(rf"\b(?:127\.0\.0\.1|localhost):{port}\b", local, text)

    # Running -----------------------------------------------------------------

    def why_not_runnable(self, service: ComposeService) -> str | None:
        """Return why `service` cannot run here, or None when it can."""
        if service.dockerfile is None:
            program = LOCAL_PROGRAMS.get(service.image_repository)
            if program is None:
                return f"image {service.spec.get('image')} has no local stand-in"
            if shutil.which(program) is None:
                return f"{program} is not installed"
            return None
        command = service.command
        module = option_value(command, "-m")
        if command[:1] == ["python"] and module is not None:
            package = ROOT.joinpath(*module.split("."))
            if not (package.with_suffix(".py").is_file() or (package / "__main__.py").is_file()):
                relative = package.relative_to(ROOT)
                return f"module {module} does not exist ({relative}/__main__.py is missing)"
        return None

    def start_order(self) -> list[str]:
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                raise ComposeRunError(f"depends_on has a cycle through {name}")
            visiting.add(name)
            for dependency in self.services[name].depends_on:
                visit(dependency)
            visiting.discard(name)
            order.append(name)

        for name in self.services:
            visit(name)
        return order

    def start(self, timeout: float = 300.0) -> None:
        """Start every runnable service once the conditions of its dependencies hold."""
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        for name in self.start_order():
            service = self.services[name]
            reason = self.why_not_runnable(service)
            if reason is not None:
                self.skipped[name] = reason
                continue
            for dependency, condition in service.depends_on.items():
                if dependency in self.skipped:
                    continue
                self.wait_for(dependency, condition, timeout)
            self.launch(service)

    def launch(self, service: ComposeService) -> None:
        port = self.local_port(service.name) if service.container_port is not None else 0
        environment = {
            name: self.rewrite(value, service) for name, value in service.environment.items()
        }
        server = Server(
            app=service.name,
            port=port,
            env={**environment, **self.extra_env},
            log_path=self.work_dir / "logs" / f"{service.name}.log",
            command=self.local_command(service),
            isolated_prefixes=ISOLATED_PREFIXES,
        )
        server.launch()
        self.servers[service.name] = server

    def wait_for(self, name: str, condition: str, timeout: float) -> None:
        if condition == "service_started":
            return
        if condition == "service_completed_successfully":
            self.wait_completed(name, timeout)
            return
        if condition == "service_healthy":
            self.wait_healthy(name, timeout)
            return
        raise ComposeRunError(f"unknown depends_on condition {condition!r} on {name}")

    def wait_completed(self, name: str, timeout: float) -> None:
        server = self.servers[name]
        assert server.process is not None
        try:
            code = server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ComposeRunError(
                f"{name} still running after {timeout}s; log:\n{server.log()}"
            ) from None
        if code != 0:
            raise ComposeRunError(f"{name} exited with status {code}; log:\n{server.log()}")

    def wait_healthy(self, name: str, timeout: float) -> None:
        service = self.services[name]
        server = self.servers[name]
        check = self.local_healthcheck(service)
        if check is None:
            raise ComposeRunError(f"{name} is a service_healthy dependency without a health check")
        deadline = time.monotonic() + timeout
        while True:
            if server.process is not None and server.process.poll() is not None:
                raise ComposeRunError(f"{name} exited before it was healthy; log:\n{server.log()}")
            result = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ComposeRunError(
                    f"{name} not healthy after {timeout}s: {' '.join(check)} printed "
                    f"{result.stdout}{result.stderr}; log:\n{server.log()}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        for name in reversed(list(self.servers)):
            self.servers[name].stop()
