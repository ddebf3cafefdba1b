"""infra/k8s/: the Kubernetes manifests, checked offline (no cluster runs on the test machines).

Three layers:
1. every document against the Kubernetes OpenAPI schemas, strictly (no unknown field), with
   the schemas the PyPI package kubernetes-validate ships (a dev dependency);
2. checkov, the security linter, with no failed check: its only skips are the
   `checkov.io/skipN` annotations in the manifests, each with a reason. checkov's pins clash
   with the dev tools', so it lives in a venv of its own (.msarch/tools/checkov-venv), built
   once from infra/k8s/checkov-requirements.txt and reused; it runs without network access
   (no platform download, no update check);
3. what msarch relies on: ports, probes, shutdown timing, the non-root security context,
   the API key from a Secret, and a Service, a PodDisruptionBudget and a NetworkPolicy
   matching each Deployment.

A missing tool fails the tests that need it, with the command that installs it.
"""

import fcntl
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import msarch
from msarch.settings import SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
NAMESPACE = "msarch"
IMAGE = f"msarch:{msarch.__version__}"
CONFIG_MAP = "msarch-config"
API_KEY_VARIABLE = "MSARCH_API_KEY"
UPSTREAMS = tuple(service for service in SERVICES if service != "gateway")
MIN_REPLICAS = 2
RUN_AS = 10001  # the numeric user and group of infra/Dockerfile

# The newest Kubernetes schemas kubernetes-validate 1.37.0 ships.
KUBERNETES_VERSION = "1.37.0"

CHECKOV_VERSION = "3.3.30"
CHECKOV_REQUIREMENTS = K8S / "checkov-requirements.txt"
CHECKOV_VENV = ROOT / ".msarch" / "tools" / "checkov-venv"
CHECKOV_STAMP = CHECKOV_VENV / "msarch-requirements.sha256"
# Creating the venv downloads ~100 packages from PyPI the first time (about 30 s here).
CHECKOV_INSTALL_TIMEOUT_S = 540
CHECKOV_RUN_TIMEOUT_S = 120
# Not applicable to msarch, each for the reason its annotation gives; any other skip fails.
ALLOWED_SKIPS = {
    "CKV_K8S_43",  # image digest: the image is built locally, there is no registry
    "CKV_K8S_15",  # imagePullPolicy Always: nothing to pull from, the image is on the nodes
    "CKV_K8S_35",  # secrets as files: msarch's settings come from the environment only
}
SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+")
SKIP_VALUE = re.compile(r"(?P<check>CKV2?_K8S_\d+)=(?P<reason>[^=]*\S[^=]*)")

Document = dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """One document of one file under infra/k8s."""

    file: str
    index: int
    body: Document

    @property
    def kind(self) -> str:
        kind: str = self.body["kind"]
        return kind

    @property
    def name(self) -> str:
        name: str = self.body["metadata"]["name"]
        return name

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}:{self.kind}/{self.name}"


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path != KUSTOMIZATION)


def load_manifests() -> list[Manifest]:
    manifests = []
    for path in manifest_files():
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        manifests += [Manifest(path.name, index, doc) for index, doc in enumerate(documents)]
    return manifests


MANIFESTS = load_manifests()


def find(kind: str, name: str) -> Document:
    matches = [m.body for m in MANIFESTS if m.kind == kind and m.name == name]
    assert len(matches) == 1, f"expected one {kind} named {name!r}, found {len(matches)}"
    return matches[0]


def default_port(service: str) -> int:
    """The port from the settings class itself, not from this machine's environment."""
    port: int = Settings.model_fields[f"{service}_port"].default
    return port


def config_data() -> dict[str, str]:
    data: dict[str, str] = find("ConfigMap", CONFIG_MAP)["data"]
    return data


def container_of(service: str) -> Document:
    containers: list[Document] = find("Deployment", service)["spec"]["template"]["spec"][
        "containers"
    ]
    assert [c["name"] for c in containers] == [service], "one container, named as its service"
    return containers[0]


def env_of(service: str) -> dict[str, Document]:
    return {entry["name"]: entry for entry in container_of(service).get("env", [])}


def container_port(service: str) -> int:
    ports: list[Document] = container_of(service)["ports"]
    assert len(ports) == 1, f"{service}: one container port"
    port: int = ports[0]["containerPort"]
    return port


def resolve_port(service: str, port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container_of(service)["ports"] if p.get("name") == port]
    assert named, f"{service}: no container port named {port!r}"
    number: int = named[0]
    return number


def pre_stop_sleep_s(service: str) -> float:
    command: list[str] = container_of(service)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", f"{service}: preStop is `sleep N`, not {command}"
    assert len(command) == 2, f"{service}: preStop is `sleep N`, not {command}"
    return float(command[1])


def graceful_timeout_s() -> float:
    """MSARCH_GRACEFUL_TIMEOUT_S as the ConfigMap sets it, else the settings' default."""
    value = config_data().get("MSARCH_GRACEFUL_TIMEOUT_S")
    default: float = Settings.model_fields["graceful_timeout_s"].default
    return float(value) if value is not None else default


def skip_annotations() -> list[tuple[str, str, str]]:
    """(object id, check id, reason) of every checkov.io/skipN annotation."""
    found = []
    for manifest in MANIFESTS:
        annotations: dict[str, str] = manifest.body["metadata"].get("annotations") or {}
        for key, value in annotations.items():
            if SKIP_ANNOTATION.fullmatch(key):
                match = SKIP_VALUE.fullmatch(value)
                assert match, f"{manifest.id}: {key} must be 'CHECK_ID=reason', not {value!r}"
                found.append((manifest.id, match["check"], match["reason"].strip()))
    return found


# -- 1. the Kubernetes schemas ----------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError as exc:
        missing = exc
    pytest.fail(
        f"kubernetes-validate is not installed ({missing}): `.venv/bin/pip install -e '.[dev]'`",
        pytrace=False,
    )


def test_kubernetes_validate_ships_the_schemas(kubernetes_validate: ModuleType) -> None:
    versions: list[str] = kubernetes_validate.utils.all_versions()
    assert KUBERNETES_VERSION in versions, f"kubernetes-validate has {versions[-3:]}"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: m.id)
def test_document_matches_the_kubernetes_schema(
    kubernetes_validate: ModuleType, manifest: Manifest
) -> None:
    try:
        kubernetes_validate.validate(manifest.body, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(part) for part in exc.path)
        pytest.fail(f"{manifest.id}: {path}: {exc.message}", pytrace=False)


def test_every_file_is_listed_in_the_kustomization() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    resources: list[str] = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert sorted(resources) == [path.name for path in manifest_files()]


def test_everything_is_in_the_msarch_namespace() -> None:
    labels = find("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for manifest in MANIFESTS:
        if manifest.kind != "Namespace":
            assert manifest.body["metadata"].get("namespace") == NAMESPACE, manifest.id


# -- 2. checkov -------------------------------------------------------------------------------


def requirements_digest() -> str:
    text = CHECKOV_REQUIREMENTS.read_bytes() + sys.version.encode()
    return hashlib.sha256(text).hexdigest()


def checkov_executable() -> Path:
    """checkov in its own venv, created (under a lock) unless it is there and up to date."""
    executable = CHECKOV_VENV / "bin" / "checkov"
    CHECKOV_VENV.parent.mkdir(parents=True, exist_ok=True)
    with (CHECKOV_VENV.parent / "checkov-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = CHECKOV_STAMP.read_text().strip() if CHECKOV_STAMP.exists() else None
        if executable.exists() and current == requirements_digest():
            return executable
        shutil.rmtree(CHECKOV_VENV, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(CHECKOV_VENV)],
            [
                str(CHECKOV_VENV / "bin" / "python"),
                *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                *("--no-input", "-r", str(CHECKOV_REQUIREMENTS)),
            ],
        ]
        for step in steps:
            try:
                done = subprocess.run(
                    step,
                    capture_output=True,
                    text=True,
                    timeout=CHECKOV_INSTALL_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"installing checkov timed out: {' '.join(step)}", pytrace=False)
            if done.returncode != 0:
                shutil.rmtree(CHECKOV_VENV, ignore_errors=True)
                pytest.fail(
                    f"could not install checkov ({' '.join(step)}), which these tests need:\n"
                    f"{done.stdout[-2000:]}{done.stderr[-4000:]}",
                    pytrace=False,
                )
        if not executable.exists():
            pytest.fail(f"{CHECKOV_REQUIREMENTS} installed no checkov", pytrace=False)
        CHECKOV_STAMP.write_text(requirements_digest() + "\n")
        return executable


def offline_environment() -> dict[str, str]:
    """checkov with nothing to call home with: no platform key, no download, no update check."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BC_", "PRISMA_", "CKV_", "CHECKOV_"))
    }
    environment.update(
        BC_SKIP_MAPPING="TRUE",  # no policy-ID mapping from the platform
        CKV_SKIP_PACKAGE_UPDATE_CHECK="TRUE",  # no "is there a newer checkov" query
        CKV_IGNORE_HIDDEN_DIRECTORIES="FALSE",  # a checkout under a dot-folder is still scanned
        CKV_CACHE_DIR=str(CHECKOV_VENV / "cache"),
        LOG_LEVEL="WARNING",
    )
    return environment


@pytest.fixture(scope="module")
def checkov_report() -> Document:
    """One checkov run over infra/k8s for the whole module (a few seconds)."""
    command = [
        str(checkov_executable()),
        *("--directory", str(K8S.relative_to(ROOT))),
        *("--framework", "kubernetes"),
        "--skip-download",
        *("--quiet", "--compact", "--output", "json"),
    ]
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=offline_environment(),
            capture_output=True,
            text=True,
            timeout=CHECKOV_RUN_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"checkov did not finish in {CHECKOV_RUN_TIMEOUT_S} s", pytrace=False)
    # Exit code 1 means "failed checks", which the tests below report one by one.
    if done.returncode not in (0, 1):
        pytest.fail(f"checkov exited {done.returncode}: {done.stderr[-4000:]}", pytrace=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON: {done.stdout[:2000]}{done.stderr[-2000:]}")
    # One framework gives one report; several would give a list of them.
    reports = report if isinstance(report, list) else [report]
    kubernetes = [r for r in reports if r.get("check_type", "kubernetes") == "kubernetes"]
    assert len(kubernetes) == 1, f"expected one kubernetes report, got {reports}"
    result: Document = kubernetes[0]
    return result


def test_checkov_is_the_pinned_version() -> None:
    pins = CHECKOV_REQUIREMENTS.read_text().splitlines()
    assert f"checkov=={CHECKOV_VERSION}" in pins
    requirements = [line for line in pins if line.strip() and not line.startswith("#")]
    assert all("==" in line for line in requirements), "every requirement pinned with =="


@pytest.mark.timeout(CHECKOV_INSTALL_TIMEOUT_S + CHECKOV_RUN_TIMEOUT_S)
def test_checkov_finds_no_failed_check(checkov_report: Document) -> None:
    summary = checkov_report["summary"]
    assert summary["checkov_version"] == CHECKOV_VERSION
    assert summary["parsing_errors"] == 0
    # Every object was scanned (checkov adds a Pod per Deployment on top).
    assert summary["resource_count"] >= len(MANIFESTS)
    assert summary["passed"] > 0
    failed = checkov_report.get("results", {}).get("failed_checks", [])
    lines = "\n".join(
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})" for c in failed
    )
    assert not failed, f"checkov failed:\n{lines}"
    assert summary["failed"] == 0


@pytest.mark.timeout(CHECKOV_INSTALL_TIMEOUT_S + CHECKOV_RUN_TIMEOUT_S)
def test_checkov_skips_only_what_the_manifests_annotate(checkov_report: Document) -> None:
    skips = skip_annotations()
    assert checkov_report["summary"]["skipped"] == len(skips)
    for manifest_id, check, reason in skips:
        assert check in ALLOWED_SKIPS, f"{manifest_id}: skipping {check} is not agreed"
        assert len(reason) >= 20, f"{manifest_id}: give {check} a real reason"


# -- 3. what msarch relies on -----------------------------------------------------------------


def test_each_service_has_its_objects() -> None:
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        names = sorted(m.name for m in MANIFESTS if m.kind == kind)
        assert names == sorted(SERVICES), kind


@pytest.mark.parametrize("service", SERVICES)
def test_ports_are_the_default_ports(service: str) -> None:
    port = default_port(service)
    assert container_port(service) == port
    env = env_of(service)
    assert env["SERVICE"]["value"] == service
    assert env["PORT"]["value"] == str(port)
    spec = find("Service", service)["spec"]
    assert spec["type"] == "ClusterIP"
    assert [p["port"] for p in spec["ports"]] == [port]
    assert [resolve_port(service, p["targetPort"]) for p in spec["ports"]] == [port]


@pytest.mark.parametrize("service", SERVICES)
def test_probes(service: str) -> None:
    container = container_of(service)
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/health"
    assert resolve_port(service, readiness["httpGet"]["port"]) == default_port(service)
    liveness = container["livenessProbe"]
    if "httpGet" in liveness:
        assert liveness["httpGet"]["path"] == "/health"
    else:
        assert resolve_port(service, liveness["tcpSocket"]["port"]) == default_port(service)

    def patience_s(probe: Document) -> int:
        patience: int = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
        return patience

    # Gentler: it takes longer to restart a container than to take it out of its Service.
    assert patience_s(liveness) > patience_s(readiness)


@pytest.mark.parametrize("service", SERVICES)
def test_shutdown_outlasts_prestop_and_graceful_timeout(service: str) -> None:
    grace = find("Deployment", service)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    sleep_s = pre_stop_sleep_s(service)
    assert sleep_s > 0
    assert grace > graceful_timeout_s() + sleep_s


@pytest.mark.parametrize("service", SERVICES)
def test_runs_as_non_root_with_nothing_to_escalate(service: str) -> None:
    pod = find("Deployment", service)["spec"]["template"]["spec"]
    container = container_of(service)
    for context in (pod["securityContext"], container["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == RUN_AS
        assert context["runAsGroup"] == RUN_AS
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    account = find("ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    # The one writable place: /tmp, from an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("service", SERVICES)
def test_image_resources_and_replicas(service: str) -> None:
    deployment = find("Deployment", service)
    container = container_of(service)
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] in ("IfNotPresent", "Always")
    assert deployment["spec"]["replicas"] >= MIN_REPLICAS
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), bound


@pytest.mark.parametrize("service", SERVICES)
def test_service_pdb_and_network_policy_select_the_deployment(service: str) -> None:
    deployment = find("Deployment", service)
    selector: dict[str, str] = deployment["spec"]["selector"]["matchLabels"]
    pod_labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert find("Service", service)["spec"]["selector"] == selector
    pdb = find("PodDisruptionBudget", service)["spec"]
    assert pdb["selector"] == {"matchLabels": selector}
    # A node can still be drained: the budget leaves at least one pod to evict.
    assert 1 <= pdb["minAvailable"] < deployment["spec"]["replicas"]
    policy = find("NetworkPolicy", service)["spec"]
    assert policy["podSelector"] == {"matchLabels": selector}
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["http"]
    if service != "gateway":
        sources = [source for rule in policy["ingress"] for source in rule["from"]]
        gateway = find("Deployment", "gateway")["spec"]["selector"]["matchLabels"]
        assert {"podSelector": {"matchLabels": gateway}} in sources


@pytest.mark.parametrize("service", SERVICES)
def test_environment(service: str) -> None:
    container = container_of(service)
    assert container["envFrom"] == [{"configMapRef": {"name": CONFIG_MAP}}]
    env = env_of(service)
    advertise = env["MSARCH_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert advertise == "status.podIP"
    host = env.get("MSARCH_HOST", {}).get("value") or config_data().get("MSARCH_HOST")
    assert host == "0.0.0.0"
    for name in env:
        if name.startswith("MSARCH_"):
            assert name.removeprefix("MSARCH_").lower() in Settings.model_fields, name


def test_config_map_settings() -> None:
    data = config_data()
    for name in data:
        assert name.startswith("MSARCH_"), name
        assert name.removeprefix("MSARCH_").lower() in Settings.model_fields, f"unknown {name}"
    assert data["MSARCH_BROKER_URL"] == "amqp://guest:guest@rabbitmq:5672/"
    assert data["MSARCH_REDIS_URL"] == "redis://redis:6379/0"
    for service in UPSTREAMS:
        assert data[f"MSARCH_{service.upper()}_URL"] == f"http://{service}:{default_port(service)}"
        find("Service", service)
    # Kubernetes Services do the discovery.
    assert "MSARCH_CONSUL_URL" not in data
    assert API_KEY_VARIABLE not in data


def test_api_key_comes_from_the_secret() -> None:
    secret = find("Secret", "msarch-api-key")
    assert set(secret.get("stringData", {}) | secret.get("data", {})) == {API_KEY_VARIABLE}
    assert "replace" in (K8S / "secret.yaml").read_text().lower()
    reference = env_of("gateway")[API_KEY_VARIABLE]
    assert "value" not in reference
    key_ref = reference["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": "msarch-api-key", "key": API_KEY_VARIABLE}
    for service in UPSTREAMS:
        # Only the gateway checks the key; the others never see it.
        assert API_KEY_VARIABLE not in env_of(service)
