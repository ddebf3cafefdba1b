"""infra/: compose.yaml against the Compose Specification schema, and the rules msarch relies on.

These check the files (compose.yaml, Dockerfile, .dockerignore, healthcheck.py) in a second;
tests/containers builds the images and runs the stack in real containers. The schema is the
compose-spec JSON schema (tests/utils/compose_spec.py); infra/compose.cluster.yaml has
test_compose_cluster.py.
"""

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from msarch.settings import SERVICES, Settings
from tests.utils.compose_spec import (
    Document,
    compose_validator,
    errors_of,
    load,
    merged,
    seconds,
)

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE_FILE = INFRA / "compose.yaml"
DOCKERFILE = INFRA / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HEALTHCHECK_SCRIPT = INFRA / "healthcheck.py"

INFRA_SERVICES = ("rabbitmq", "redis", "consul", "nats")
MONITORING = ("prometheus", "grafana", "jaeger")
"""The `monitoring` profile's services (tests/unit/test_monitoring.py checks them)."""
UPSTREAMS = tuple(service for service in SERVICES if service != "gateway")
REPLICA_VARIABLES = {service: f"{service.upper()}_REPLICAS" for service in UPSTREAMS}


def default_port(service: str) -> int:
    """The port from the settings class itself, not from this machine's environment."""
    port: int = Settings.model_fields[f"{service}_port"].default
    return port


def load_compose(environment: Mapping[str, str] | None = None) -> Document:
    return load(COMPOSE_FILE, environment)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return compose_validator()


@pytest.fixture(scope="module")
def compose() -> Document:
    """The file as compose sees it with nothing set in the environment."""
    return load_compose(environment={})


# The compose file is valid Compose.


@pytest.mark.parametrize(
    "environment",
    [
        None,
        {},
        {"STORE_REPLICAS": "3", "BATCH_REPLICAS": "2", "MSARCH_API_KEY": "secret"},
    ],
    ids=["as-written", "defaults", "replicas-and-api-key"],
)
def test_compose_file_matches_the_compose_spec_schema(
    validator: Draft202012Validator, environment: dict[str, str] | None
) -> None:
    assert errors_of(validator, load_compose(environment)) == []


@pytest.mark.parametrize(
    "service",
    [
        {"image": "x", "restart_policy": "always"},
        {"image": "x", "depends_on": {"redis": {"condition": "healthy"}}},
        {"image": "x", "healthcheck": {"tst": ["CMD", "true"]}},
        {"image": "x", "deploy": {"replicas": [1]}},
    ],
    ids=["unknown-key", "bad-condition", "bad-healthcheck", "bad-replicas"],
)
def test_schema_rejects_what_compose_rejects(
    validator: Draft202012Validator, service: dict[str, Any]
) -> None:
    """The validation above means something: the schema is strict about service keys."""
    assert errors_of(validator, {"services": {"bad": service}}) != []


def test_every_service_and_dependency_is_defined(compose: Document) -> None:
    assert set(compose["services"]) == {*SERVICES, *INFRA_SERVICES, *MONITORING}


def test_bind_mounts_exist(compose: Document) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts {source}, which is missing"


# Every msarch service: same image, healthy dependencies, health, restart, replicas.


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_built_from_the_one_dockerfile(compose: Document, name: str) -> None:
    build = compose["services"][name]["build"]
    assert (INFRA / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.parametrize("name", SERVICES)
def test_service_runs_its_own_app_on_its_port(compose: Document, name: str) -> None:
    environment = compose["services"][name]["environment"]
    assert environment["SERVICE"] == name
    assert environment["PORT"] == str(default_port(name))
    assert "command" not in compose["services"][name], "the image's CMD serves SERVICE on PORT"


@pytest.mark.parametrize("name", SERVICES)
def test_service_has_a_healthcheck_on_its_health_endpoint(compose: Document, name: str) -> None:
    healthcheck = compose["services"][name]["healthcheck"]
    assert not healthcheck.get("disable", False)
    assert healthcheck["test"] == ["CMD", "python", "/opt/msarch/healthcheck.py"]
    assert seconds(healthcheck["timeout"]) < seconds(healthcheck["interval"])


@pytest.mark.parametrize("name", SERVICES)
def test_service_waits_for_healthy_broker_redis_and_consul(compose: Document, name: str) -> None:
    depends_on = compose["services"][name]["depends_on"]
    for dependency in ("rabbitmq", "redis", "consul"):
        assert depends_on[dependency] == {"condition": "service_healthy"}, dependency


def test_gateway_waits_for_every_healthy_upstream(compose: Document) -> None:
    depends_on = compose["services"]["gateway"]["depends_on"]
    for upstream in UPSTREAMS:
        assert depends_on[upstream] == {"condition": "service_healthy"}, upstream


@pytest.mark.parametrize("name", SERVICES)
def test_service_restarts_and_stops_gracefully(compose: Document, name: str) -> None:
    service = compose["services"][name]
    assert service["restart"] == "always"
    graceful_s = Settings.model_fields["graceful_timeout_s"].default
    assert seconds(service["stop_grace_period"]) > graceful_s


@pytest.mark.parametrize("name", SERVICES)
def test_service_reaches_broker_redis_and_consul_by_service_name(
    compose: Document, name: str
) -> None:
    environment = compose["services"][name]["environment"]
    assert environment["MSARCH_BROKER_URL"] == "amqp://guest:guest@rabbitmq:5672/"
    assert environment["MSARCH_REDIS_URL"] == "redis://redis:6379/0"
    assert environment["MSARCH_CONSUL_URL"] == "http://consul:8500"


def test_gateway_reaches_every_upstream_by_service_name(compose: Document) -> None:
    environment = compose["services"]["gateway"]["environment"]
    for upstream in UPSTREAMS:
        url = f"http://{upstream}:{default_port(upstream)}"
        assert environment[f"MSARCH_{upstream.upper()}_URL"] == url


def test_only_the_gateway_publishes_a_port(compose: Document) -> None:
    assert compose["services"]["gateway"]["ports"] == ["8000:8000"]
    for upstream in UPSTREAMS:
        assert "ports" not in compose["services"][upstream], upstream


@pytest.mark.parametrize("name", UPSTREAMS)
def test_replicas_are_set_from_the_environment(name: str) -> None:
    variable = REPLICA_VARIABLES[name]
    assert load_compose({})["services"][name]["deploy"]["replicas"] == "1"
    scaled = load_compose({variable: "3"})["services"][name]["deploy"]["replicas"]
    assert scaled == "3"


# The dependencies.


def test_redis_appends_every_write_to_disk_before_answering(compose: Document) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"] if isinstance(redis["command"], list) else redis["command"].split()
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_rabbitmq_has_the_management_ui_and_is_healthy_once_its_listeners_answer(
    compose: Document,
) -> None:
    rabbitmq = compose["services"]["rabbitmq"]
    assert re.fullmatch(r"rabbitmq:3(\.\d+)*-management", rabbitmq["image"])
    assert any(port.endswith(":15672") for port in rabbitmq["ports"])
    assert rabbitmq["healthcheck"]["test"][1:] == [
        "rabbitmq-diagnostics", "-q", "check_port_connectivity"
    ]  # fmt: skip
    assert any(volume.endswith(":/var/lib/rabbitmq") for volume in rabbitmq["volumes"])


def test_consul_has_its_ui_and_a_healthcheck(compose: Document) -> None:
    consul = compose["services"]["consul"]
    assert consul["image"].startswith("hashicorp/consul:")
    assert "-ui" in consul["command"]
    assert any(port.endswith(":8500") for port in consul["ports"])
    assert consul["healthcheck"]["test"]


def test_nats_is_optional_and_runs_jetstream(compose: Document) -> None:
    nats = compose["services"]["nats"]
    assert nats["image"].startswith("nats:2")
    assert nats["profiles"] == ["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "./nats.conf:/etc/nats/nats.conf:ro" in nats["volumes"]
    assert nats["healthcheck"]["test"]


def test_nats_fsyncs_every_write() -> None:
    """JetStream's default sync_interval (2 min) can lose acknowledged messages."""
    config = (INFRA / "nats.conf").read_text()
    assert re.search(r"jetstream\s*\{[^}]*sync_interval:\s*always", config)
    assert "store_dir: /data" in config


@pytest.mark.parametrize("name", INFRA_SERVICES)
def test_dependency_restarts_and_reports_health(compose: Document, name: str) -> None:
    service = compose["services"][name]
    assert service["restart"] == "always"
    assert service["healthcheck"]["test"]


# The Dockerfile and its build context.


def test_dockerfile_builds_on_python_slim() -> None:
    instructions = dockerfile_instructions()
    image_args = [args for keyword, args in instructions if keyword == "ARG"]
    assert "PYTHON_IMAGE=python:3.11-slim" in image_args
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms
    assert all(args.startswith("${PYTHON_IMAGE}") for args in froms)


def test_dockerfile_installs_the_project_with_pip() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    assert any(re.search(r"\bpip install (--no-deps )?\.(\s|$)", run) for run in runs)


def test_dockerfile_runs_as_a_user_that_is_not_root() -> None:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "the Dockerfile has no USER: the services would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"}
    assert group not in {"root", "0"}


def test_dockerfile_has_a_healthcheck_through_python() -> None:
    healthchecks = [args for keyword, args in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    options, _, command = healthchecks[0].partition("CMD ")
    assert json.loads(command) == ["python", "/opt/msarch/healthcheck.py"]
    assert "--interval=" in options
    assert "--timeout=" in options


def test_dockerfile_serves_the_chosen_service_with_msarch_serve() -> None:
    """`msarch serve` runs uvicorn as PID 1 (exec form, no shell between it and SIGTERM)."""
    commands = [args for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    assert json.loads(commands[-1]) == ["msarch", "serve"]


def test_image_listens_on_every_interface_and_advertises_its_own_address() -> None:
    """MSARCH_HOST=0.0.0.0 in the image: what uvicorn binds is what the settings say, so the
    service registers the container's address in Consul, not 127.0.0.1 (issue 10)."""
    environment = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "ENV")
    assert re.search(r"\bMSARCH_HOST=0\.0\.0\.0\b", environment)
    assert re.search(r"\bSERVICE=\w+", environment)
    assert re.search(r"\bPORT=\d+", environment)


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes everything, then lets in what the Dockerfile copies."""
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    copies = [args for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    sources = [
        source for args in copies if not args.startswith("--from") for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert source.rstrip("/") in allowed, f"{source} is copied but .dockerignore leaves it out"
        assert (ROOT / source).exists(), source


# The healthcheck script, run against a real HTTP server on this machine.


class HealthAnswer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status": "ok"}' if self.status == 200 else b'{"status": "unhealthy"}'
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the script's own stderr when it matters."""


@pytest.fixture
def health_server(request: pytest.FixtureRequest) -> Iterator[int]:
    handler = type("Answer", (HealthAnswer,), {"status": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PORT": str(port), "http_proxy": "http://127.0.0.1:9"}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("health_server", "exit_code"), [(200, 0), (503, 1)], indirect=["health_server"]
)
def test_healthcheck_script_follows_the_health_status(health_server: int, exit_code: int) -> None:
    """A proxy in the environment is ignored: the check always asks this container."""
    result = run_healthcheck(health_server)
    assert result.returncode == exit_code, result.stderr


def test_healthcheck_script_fails_when_nothing_listens() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HealthAnswer)
    port = server.server_address[1]
    server.server_close()
    result = run_healthcheck(port)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}/health" in result.stderr


# infra/compose.local.yaml: the same stack, with images built here.

LOCAL_OVERRIDE = INFRA / "compose.local.yaml"
LOCAL_IMAGES = INFRA / "local"


@pytest.fixture(scope="module")
def local_override() -> Document:
    document: Document = yaml.safe_load(LOCAL_OVERRIDE.read_text())
    return document


def test_local_override_swaps_images_and_nothing_else(local_override: Document) -> None:
    """Services, networks, volumes, healthchecks, depends_on and restart stay compose.yaml's;
    only Consul, which no package source ships, is replaced (by the project's double)."""
    assert set(local_override) <= {"services"} | {k for k in local_override if k.startswith("x-")}
    assert set(local_override["services"]) == {*SERVICES, *INFRA_SERVICES}
    for name, service in local_override["services"].items():
        allowed = {"image", "build"} | ({"command", "healthcheck"} if name == "consul" else set())
        assert set(service) <= allowed, f"{name} changes {set(service) - allowed}"
        assert service["image"].startswith("msarch-local/"), name


def test_local_override_builds_the_services_on_the_local_python(local_override: Document) -> None:
    for name in SERVICES:
        service = local_override["services"][name]
        assert service["image"] == "msarch-local/msarch"
        assert service["build"]["args"]["PYTHON_IMAGE"] == "msarch-local/python"


def test_local_images_script_builds_every_image_the_override_names(
    local_override: Document,
) -> None:
    script = (LOCAL_IMAGES / "images.sh").read_text()
    built = set(re.findall(r"^build (msarch-local/[\w-]+) ", script, re.M))
    wanted = {service["image"] for service in local_override["services"].values()}
    assert wanted <= built, f"not built by images.sh: {wanted - built}"
    for dockerfile in re.findall(r'"\$here/([\w.-]+\.Dockerfile)"', script):
        assert (LOCAL_IMAGES / dockerfile).exists(), dockerfile


def test_compose_file_with_the_local_override_is_valid_compose(
    validator: Draft202012Validator, compose: Document, local_override: Document
) -> None:
    assert errors_of(validator, merged(compose, local_override)) == []


def test_compose_file_has_no_top_level_name() -> None:
    """Debian's Compose 1.29 refuses it; the project name is passed with -p."""
    assert "name" not in yaml.safe_load(COMPOSE_FILE.read_text())
