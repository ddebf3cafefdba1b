"""infra/compose.cluster.yaml (issue 12): clustered engines and two instances of every service.

The file and its local override are checked against the Compose Specification schema and by
compose itself (`config`, which needs only the compose CLI, not an engine), then for the rules
the cluster relies on: one RabbitMQ cluster, one JetStream cluster, Redis behind Sentinel, two
of each service, host ports only from variables. Bringing it up is tests/containers' business.
"""

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from jsonschema import Draft202012Validator

from msarch.settings import SERVICES, Settings
from tests.utils.compose import NATS_SERVERS, RABBITMQ_NODES, SENTINELS
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
CLUSTER_FILE = INFRA / "compose.cluster.yaml"
LOCAL_OVERRIDE = INFRA / "compose.cluster.local.yaml"
CLUSTER = INFRA / "cluster"
COMPOSE_SH = INFRA / "local" / "compose.sh"

REDIS_NODES = ("redis", "redis-replica")
ENGINES = (*RABBITMQ_NODES, *NATS_SERVERS, *REDIS_NODES, *SENTINELS, "consul")
GATEWAYS = ("gateway", "gateway-2")
UPSTREAMS = tuple(service for service in SERVICES if service != "gateway")
APPS = (*GATEWAYS, *UPSTREAMS)
MONITORING = ("prometheus", "grafana", "jaeger")
"""The `monitoring` profile: upstream images, which the local stack never builds or starts."""
PORT_VARIABLES = {
    "MSARCH_COMPOSE_GATEWAY_PORT": "40101",
    "MSARCH_COMPOSE_GATEWAY2_PORT": "40102",
    "MSARCH_COMPOSE_RABBITMQ_UI_PORT": "40103",
    "MSARCH_COMPOSE_CONSUL_PORT": "40104",
    "MSARCH_COMPOSE_PROMETHEUS_PORT": "40105",
    "MSARCH_COMPOSE_GRAFANA_PORT": "40106",
    "MSARCH_COMPOSE_JAEGER_PORT": "40107",
}
NATS_URL = "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222"


def load_cluster(environment: Mapping[str, str] | None = None) -> Document:
    return load(CLUSTER_FILE, environment)


def config_lines(path: Path) -> list[str]:
    """A RabbitMQ, NATS or Redis config file without its comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def clean_environment(**extra: str) -> dict[str, str]:
    """This machine's environment without what would change the file's defaults."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MSARCH_COMPOSE_", "COMPOSE_", "MSARCH_API_KEY"))
    }
    return {**kept, **extra}


def compose_cli() -> list[str]:
    """Compose v2 when the docker CLI has it, else Debian's docker-compose 1.29."""
    docker = shutil.which("docker")
    plugin = [docker, "compose"] if docker else []
    if plugin and subprocess.run([*plugin, "version"], capture_output=True).returncode == 0:
        return plugin
    if legacy := shutil.which("docker-compose"):
        return [legacy]
    pytest.fail(
        "these tests need the compose CLI (`docker compose` or docker-compose): "
        "infra/local/engine.sh installs Debian's docker-compose",
        pytrace=False,
    )


def compose_config(environment: Mapping[str, str]) -> Document:
    """What compose makes of the cluster file and its local override (`config`)."""
    files = ["-f", str(CLUSTER_FILE), "-f", str(LOCAL_OVERRIDE)]
    command = [*compose_cli(), "--compatibility", "-p", "msarch-unit", *files, "config"]
    result = subprocess.run(
        command,
        env=clean_environment(**environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document: Document = yaml.safe_load(result.stdout)
    return document


def published_ports(service: Document) -> list[str]:
    """Host ports of a service from `config` output (short or long port syntax)."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(str(port["published"]))
        else:
            ports.append(port.split(":")[-2])
    return ports


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return compose_validator()


@pytest.fixture(scope="module")
def cluster() -> Document:
    """The file as compose sees it with nothing set in the environment."""
    return load_cluster(environment={})


@pytest.fixture(scope="module")
def local_override() -> Document:
    document: Document = yaml.safe_load(LOCAL_OVERRIDE.read_text())
    return document


def environment_of(cluster: Document, name: str) -> dict[str, Any]:
    environment: dict[str, Any] = cluster["services"][name]["environment"]
    return environment


# Valid Compose, as written and as compose reads it.


@pytest.mark.parametrize(
    "environment",
    [None, {}, {"MSARCH_COMPOSE_BROKER_URL": NATS_URL, **PORT_VARIABLES}],
    ids=["as-written", "defaults", "nats-and-ports"],
)
def test_cluster_file_matches_the_compose_spec_schema(
    validator: Draft202012Validator, environment: dict[str, str] | None
) -> None:
    assert errors_of(validator, load_cluster(environment)) == []


def test_cluster_file_with_the_local_override_is_valid_compose(
    validator: Draft202012Validator, cluster: Document, local_override: Document
) -> None:
    assert errors_of(validator, merged(cluster, local_override)) == []


@pytest.fixture(scope="module")
def composed() -> Document:
    """What compose makes of the two files with the `nats` and `monitoring` profiles and every
    port variable (Compose 1.29 lists the services of every profile anyway, v2 only those on)."""
    return compose_config({"COMPOSE_PROFILES": "nats,monitoring", **PORT_VARIABLES})


def test_compose_reads_the_cluster_file_with_its_local_override(composed: Document) -> None:
    services = composed["services"]
    assert set(services) == {*ENGINES, *APPS, *MONITORING}
    for name in APPS:
        assert services[name]["image"] == "msarch-local/msarch", name
    for name in NATS_SERVERS:
        assert services[name]["profiles"] == ["nats"], name
        assert services[name]["image"] == "msarch-local/nats", name
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
        assert not services[name]["image"].startswith("msarch-local/"), name


def test_compose_publishes_only_the_ports_the_variables_name(composed: Document) -> None:
    published = {
        name: ports for name, service in composed["services"].items()
        if (ports := published_ports(service))
    }  # fmt: skip
    assert published == {
        "gateway": [PORT_VARIABLES["MSARCH_COMPOSE_GATEWAY_PORT"]],
        "gateway-2": [PORT_VARIABLES["MSARCH_COMPOSE_GATEWAY2_PORT"]],
        "rabbitmq1": [PORT_VARIABLES["MSARCH_COMPOSE_RABBITMQ_UI_PORT"]],
        "consul": [PORT_VARIABLES["MSARCH_COMPOSE_CONSUL_PORT"]],
        "prometheus": [PORT_VARIABLES["MSARCH_COMPOSE_PROMETHEUS_PORT"]],
        "grafana": [PORT_VARIABLES["MSARCH_COMPOSE_GRAFANA_PORT"]],
        "jaeger": [PORT_VARIABLES["MSARCH_COMPOSE_JAEGER_PORT"]],
    }


def test_every_port_in_the_file_comes_from_its_variable() -> None:
    written = load_cluster()
    for name, service in written["services"].items():
        for port in service.get("ports", []):
            host = port.rsplit(":", 1)[0]
            match = re.fullmatch(r"(127\.0\.0\.1:)?\$\{(?P<variable>\w+):-\d+\}", host)
            assert match, f"{name} publishes {port!r}: not from a variable"
            assert match["variable"] in PORT_VARIABLES, f"{name}: {match['variable']}"


def test_one_private_network_and_no_top_level_name() -> None:
    written = load_cluster()
    assert "name" not in written, "Compose 1.29 refuses a top-level name"
    assert "networks" not in written, "every container on the project's default network"
    for name, service in written["services"].items():
        assert "network_mode" not in service, name
        assert "networks" not in service, name


def test_bind_mounts_exist_and_are_read_only(cluster: Document) -> None:
    for name, service in cluster["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts {source}, which is missing"
                assert volume.endswith(":ro"), f"{name} mounts {source} writable"


# The local override only swaps images (and Consul for the project's double).


def test_local_override_swaps_images_and_nothing_else(local_override: Document) -> None:
    assert set(local_override) <= {"services"} | {k for k in local_override if k.startswith("x-")}
    assert set(local_override["services"]) == {*ENGINES, *APPS}
    for name, service in local_override["services"].items():
        allowed = {"image", "build"} | ({"command", "healthcheck"} if name == "consul" else set())
        assert set(service) <= allowed, f"{name} changes {set(service) - allowed}"
        assert service["image"].startswith("msarch-local/"), name


def test_local_override_uses_the_images_images_sh_builds(local_override: Document) -> None:
    script = (INFRA / "local" / "images.sh").read_text()
    built = set(re.findall(r"^build (msarch-local/[\w-]+) ", script, re.M))
    wanted = {service["image"] for service in local_override["services"].values()}
    assert wanted <= built, f"not built by images.sh: {wanted - built}"
    for name in APPS:
        assert local_override["services"][name]["build"]["args"]["PYTHON_IMAGE"] == (
            "msarch-local/python"
        )


# Two instances of every service.


def test_every_service_has_two_instances(cluster: Document) -> None:
    services = cluster["services"]
    for name in UPSTREAMS:
        assert services[name]["deploy"]["replicas"] == 2, name
    for name in GATEWAYS:
        assert services[name].get("deploy", {}).get("replicas", 1) == 1, name
        assert services[name]["environment"]["SERVICE"] == "gateway"
        assert services[name]["environment"]["PORT"] == "8000"
    assert "gateway-2" not in SERVICES, "the second gateway is the gateway service again"


def test_compose_runs_two_of_each_replicated_service(composed: Document) -> None:
    services = composed["services"]
    for name in UPSTREAMS:
        assert services[name]["deploy"]["replicas"] == 2, name


@pytest.mark.parametrize("name", APPS)
def test_service_waits_for_every_engine_but_nats(cluster: Document, name: str) -> None:
    """NATS is a profile: depending on it would break the RabbitMQ variant."""
    depends_on = cluster["services"][name]["depends_on"]
    for engine in (*RABBITMQ_NODES, *REDIS_NODES, *SENTINELS, "consul"):
        assert depends_on[engine] == {"condition": "service_healthy"}, engine
    assert not set(depends_on) & set(NATS_SERVERS)


@pytest.mark.parametrize("name", GATEWAYS)
def test_gateway_waits_for_every_healthy_upstream(cluster: Document, name: str) -> None:
    depends_on = cluster["services"][name]["depends_on"]
    for upstream in UPSTREAMS:
        assert depends_on[upstream] == {"condition": "service_healthy"}, upstream


@pytest.mark.parametrize("name", APPS)
def test_service_healthcheck_restart_and_graceful_stop(cluster: Document, name: str) -> None:
    service = cluster["services"][name]
    assert service["healthcheck"]["test"] == ["CMD", "python", "/opt/msarch/healthcheck.py"]
    assert service["restart"] == "always"
    graceful_s = Settings.model_fields["graceful_timeout_s"].default
    assert seconds(service["stop_grace_period"]) > graceful_s
    assert (INFRA / service["build"]["context"]).resolve() == ROOT


# The services' environment: every node of every engine, by service name.


@pytest.mark.parametrize("name", APPS)
def test_services_know_every_node(cluster: Document, name: str) -> None:
    environment = environment_of(cluster, name)
    # A key with no value is passed through from compose's shell when set there: unset here.
    settings = Settings.model_validate(
        {
            key.removeprefix("MSARCH_").lower(): value
            for key, value in environment.items()
            if value is not None
        }
    )
    assert settings.broker_urls == [f"amqp://guest:guest@{n}:5672/" for n in RABBITMQ_NODES]
    assert settings.nats_replicas == len(NATS_SERVERS)
    assert settings.sentinels == [(sentinel, 26379) for sentinel in SENTINELS]
    assert settings.redis_master == "mymaster"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.consul_url == "http://consul:8500"
    for upstream in UPSTREAMS:
        port = Settings.model_fields[f"{upstream}_port"].default
        assert environment[f"MSARCH_{upstream.upper()}_URL"] == f"http://{upstream}:{port}"


def test_the_nats_variant_is_one_variable_away() -> None:
    environment = environment_of(load_cluster({"MSARCH_COMPOSE_BROKER_URL": NATS_URL}), "store")
    assert environment["MSARCH_BROKER_URL"] == NATS_URL
    assert Settings(broker_url=NATS_URL).broker_urls == [
        f"nats://{server}:4222" for server in NATS_SERVERS
    ]


# RabbitMQ: one cluster of three.


def test_rabbitmq_nodes_have_fixed_hostnames_and_one_cookie(cluster: Document) -> None:
    cookies = set()
    for node in RABBITMQ_NODES:
        service = cluster["services"][node]
        assert service["hostname"] == node, "the node name rabbit@<hostname> must not change"
        assert re.fullmatch(r"rabbitmq:3(\.\d+)*-management", service["image"])
        assert f"{node}-data:/var/lib/rabbitmq" in service["volumes"]
        assert "./rabbitmq.conf:/etc/rabbitmq/conf.d/20-msarch.conf:ro" in service["volumes"]
        assert (
            "./cluster/rabbitmq-cluster.conf:/etc/rabbitmq/conf.d/30-cluster.conf:ro"
            in service["volumes"]
        )
        assert service["restart"] == "always"
        # Read by the server and by the CLI tools of its container (RabbitMQ 3.9 and later).
        cookies.add(service["environment"]["RABBITMQ_ERLANG_COOKIE"])
    assert len(cookies) == 1
    assert any(port.endswith(":15672") for port in cluster["services"]["rabbitmq1"]["ports"])


def test_rabbitmq_cluster_config_lists_the_three_nodes() -> None:
    settings = dict(
        line.split(" = ", 1) for line in config_lines(CLUSTER / "rabbitmq-cluster.conf")
    )
    assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = [v for k, v in settings.items() if k.startswith("cluster_formation.classic_config.")]
    assert listed == [f"rabbit@{node}" for node in RABBITMQ_NODES]
    assert int(settings["net_ticktime"]) <= 15, "a partition must be seen in seconds"
    assert settings["cluster_partition_handling"] == "pause_minority"


def test_rabbitmq_nodes_join_the_seed_and_are_healthy_only_when_running(
    cluster: Document,
) -> None:
    services = cluster["services"]
    assert "depends_on" not in services["rabbitmq1"]
    assert "check_running" in " ".join(services["rabbitmq1"]["healthcheck"]["test"])
    for node in RABBITMQ_NODES[1:]:
        assert services[node]["depends_on"] == {"rabbitmq1": {"condition": "service_healthy"}}
        test = " ".join(services[node]["healthcheck"]["test"])
        assert "check_running" in test
        assert "await_online_nodes 2" in test, "joined: it sees another node"


# NATS: one JetStream cluster of three, under the `nats` profile.


def test_nats_servers_are_a_profile_with_their_own_names(cluster: Document) -> None:
    for server in NATS_SERVERS:
        service = cluster["services"][server]
        assert service["image"].startswith("nats:2")
        assert service["profiles"] == ["nats"]
        assert service["command"] == ["-c", "/etc/nats/nats.conf"]
        assert service["environment"]["NATS_SERVER_NAME"] == server
        assert f"{server}-data:/data" in service["volumes"]
        assert "./cluster/nats-cluster.conf:/etc/nats/nats.conf:ro" in service["volumes"]
        assert "/healthz?js-enabled-only=true" in " ".join(service["healthcheck"]["test"])


def test_nats_cluster_config_routes_to_every_server_and_fsyncs() -> None:
    config = (CLUSTER / "nats-cluster.conf").read_text()
    assert re.search(r"^server_name:\s*\$NATS_SERVER_NAME$", config, re.M)
    assert re.search(r"jetstream\s*\{[^}]*store_dir:\s*/data[^}]*sync_interval:\s*always", config)
    assert re.findall(r"nats://(\w+):6222", config) == list(NATS_SERVERS)
    assert re.search(r"^http:\s*0\.0\.0\.0:8222$", config, re.M)


# Redis: a primary and a replica behind three Sentinels.


def test_redis_nodes_fsync_every_write_and_announce_their_names(cluster: Document) -> None:
    config = config_lines(CLUSTER / "redis.conf")
    assert "appendonly yes" in config
    assert "appendfsync always" in config
    for node in REDIS_NODES:
        service = cluster["services"][node]
        assert service["image"].startswith("redis:7")
        assert service["entrypoint"] == ["sh", "/etc/msarch/redis-run.sh"]
        assert f"{node}-data:/data" in service["volumes"]
        template, *lines = service["command"]
        assert template == "/etc/msarch/redis.conf"
        assert f"replica-announce-ip {node}" in lines
    assert "replicaof redis 6379" in cluster["services"]["redis-replica"]["command"]
    assert not any("replicaof" in line for line in cluster["services"]["redis"]["command"])


def test_sentinels_watch_the_primary_by_name(cluster: Document) -> None:
    config = config_lines(CLUSTER / "sentinel.conf")
    assert "sentinel resolve-hostnames yes" in config
    assert "sentinel announce-hostnames yes" in config
    monitor = config.index("sentinel monitor mymaster redis 6379 2")
    assert config.index("sentinel resolve-hostnames yes") < monitor, "needed to read `redis`"
    [down_after] = [line for line in config if "down-after-milliseconds mymaster" in line]
    assert int(down_after.split()[-1]) <= 5000
    for sentinel in SENTINELS:
        service = cluster["services"][sentinel]
        assert service["hostname"] == sentinel
        assert service["command"] == [
            "--sentinel",
            "/etc/msarch/sentinel.conf",
            f"sentinel announce-ip {sentinel}",
        ]
        assert "sentinel ckquorum mymaster" in " ".join(service["healthcheck"]["test"])


def _redis_run(tmp_path: Path, stand_in: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """infra/cluster/redis-run.sh with its /data and /tmp in tmp_path and a stand-in
    redis-server (a shell script) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").write_text(f"#!/bin/sh\n{stand_in}")
    (bin_dir / "redis-server").chmod(0o755)
    (tmp_path / "data").mkdir()
    script = (CLUSTER / "redis-run.sh").read_text()
    script = script.replace("/tmp/", f"{tmp_path}/").replace("/data/", f"{tmp_path}/data/")
    (tmp_path / "redis-run.sh").write_text(script)
    environment = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MSARCH_REDIS_RESTART_PAUSE_S": "0.1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(tmp_path / "redis-run.sh"), *args],
            env=environment, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip

    return run


# The stand-in prints what it was given and its config, then stops the script (SIGTERM to its
# parent, as `docker stop` would), which ends the script's restart loop with exit code 0.
PRINT_AND_STOP = 'echo "$@"\ncat "$1"\nkill -TERM $PPID\n'


def test_redis_run_copies_the_template_once_and_appends_the_lines(tmp_path: Path) -> None:
    run = _redis_run(tmp_path, PRINT_AND_STOP)
    data = tmp_path / "data"
    sentinel = ("--sentinel", str(CLUSTER / "sentinel.conf"), "sentinel announce-ip sentinel1")
    first = run(*sentinel).stdout
    assert first.splitlines()[0] == f"{data}/sentinel.conf --sentinel"
    assert first.rstrip().endswith("sentinel announce-ip sentinel1")
    # What Sentinel rewrote is kept: a restart runs the copy, not the template.
    (data / "sentinel.conf").write_text("rewritten by sentinel\n")
    again = run(*sentinel).stdout
    assert again.splitlines()[1:] == ["rewritten by sentinel"]
    node = run(str(CLUSTER / "redis.conf"), "replicaof redis 6379").stdout
    assert node.splitlines()[0] == f"{data}/redis.conf"
    assert "appendfsync always" in node


def test_redis_run_starts_a_dead_server_again_in_the_same_container(tmp_path: Path) -> None:
    """A server that dies is started again after the pause, by the script that stays PID 1 of
    its container (the container's name keeps resolving for Sentinel); its pid is on file."""
    runs = tmp_path / "runs"
    stand_in = (
        f'echo $$ >>"{runs}"\n'
        f'if [ "$(wc -l <"{runs}")" -lt 2 ]; then exit 137; fi\n'
        f'cat "{tmp_path}/redis-server.pid" >"{tmp_path}/pid-seen"\n'
        "kill -TERM $PPID\n"
    )
    done = _redis_run(tmp_path, stand_in)(str(CLUSTER / "redis.conf"))
    pids = runs.read_text().split()
    assert len(pids) == 2, "killed once, started again once"
    assert "redis-server exited with 137; starting it again in 0.1 s" in done.stderr
    assert (tmp_path / "pid-seen").read_text().strip() == pids[1]
    assert done.returncode == 0, "SIGTERM (docker stop) ends it cleanly"


# infra/local/compose.sh picks the file set.


def compose_sh(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    project = f"msarch-unit-{uuid4().hex[:8]}"  # no container of a real stack matches it
    compose_cli()
    return subprocess.run(
        [str(COMPOSE_SH), *args],
        env=clean_environment(MSARCH_COMPOSE_PROJECT=project, **environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("stack", "node"), [("cluster", "rabbitmq1"), ("", "rabbitmq")])
def test_compose_sh_runs_compose_on_the_chosen_stack(stack: str, node: str) -> None:
    """MSARCH_COMPOSE_STACK picks the files; unset, a project with no containers is single."""
    result = compose_sh("config", "--services", MSARCH_COMPOSE_STACK=stack)
    assert result.returncode == 0, result.stderr
    assert node in result.stdout.split()


def test_compose_sh_refuses_an_unknown_stack() -> None:
    result = compose_sh("config", MSARCH_COMPOSE_STACK="triple")
    assert result.returncode == 2
    assert "single or cluster" in result.stderr
