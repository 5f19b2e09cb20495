"""The Kubernetes manifests under deploy/k8s, checked without a cluster.

Every overlay and every service's own kustomization is built with the real ``kustomize`` (installed
once into .tools/ from the Go module proxy when missing: about a minute the first time, cached
after), each object is validated against the Kubernetes schemas (``kubernetes-validate``, strict),
and every setting a service reads is checked to reach its container from the manifests.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings
from tickwatch_common.bus_access import ACCESS, SCRIPT_PATH, acl_bindings, principal
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import SYMBOL_PARTITIONS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZE_VERSION = "v5.7.1"
KUSTOMIZE = ROOT / ".tools" / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"
KUBERNETES_VERSION = "1.33.0"
OVERLAYS = ("dev", "prod")

# Service -> (module of its Settings, the port its /ready and /health are served on).
SERVICES = {
    "ingestor": ("tickwatch_ingestor.settings", 8081),
    "gateway": ("tickwatch_gateway.settings", 8080),
    "alert-engine": ("tickwatch_alert_engine.settings", 8082),
    "notifier": ("tickwatch_notifier.settings", 8083),
    "portfolio": ("tickwatch_portfolio.settings", 8084),
}
# What `python -m tickwatch_devstack init` reads (libs/devstack/src/tickwatch_devstack/__main__.py):
# the Kafka settings (its principal's included) and DATABASE_URL.
INIT_SETTINGS = {
    **{(f.alias or n).upper(): f.is_required() for n, f in KafkaSettings.model_fields.items()},
    "DATABASE_URL": True,
}
SECRET = "tickwatch-secrets"
CONFIG = "tickwatch-config"
Object = dict[str, Any]


def kustomize() -> Path:
    """The pinned kustomize: from .tools/, else `go install`ed there (once per machine)."""
    if not KUSTOMIZE.exists():
        go = shutil.which("go")
        if go is None:
            pytest.fail("kustomize is not in .tools/ and there is no `go` to install it with")
        subprocess.run(
            [go, "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"],
            env={**os.environ, "GOBIN": str(KUSTOMIZE.parent)},
            check=True,
            timeout=600,
        )
    return KUSTOMIZE


def targets() -> list[str]:
    """Every kustomization: the bases and, per overlay, the whole and each part alone."""
    return sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))


@cache
def built() -> dict[str, list[Object]]:
    binary = kustomize()

    def build(target: str) -> list[Object]:
        out = subprocess.run(
            [str(binary), "build", str(K8S / target)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"kustomize build {target}: {out.stderr}"
        return [o for o in yaml.safe_load_all(out.stdout) if o]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(targets(), pool.map(build, targets()), strict=True))


def objects(target: str, kind: str | None = None) -> list[Object]:
    return [o for o in built()[target] if kind is None or o["kind"] == kind]


def one(target: str, kind: str, name: str) -> Object:
    found = [o for o in objects(target, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{target}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(workload: Object) -> Object:
    containers: list[Object] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_names(settings: type[BaseSettings]) -> dict[str, bool]:
    """Each setting's environment variable -> whether it is required."""
    return {(f.alias or n).upper(): f.is_required() for n, f in settings.model_fields.items()}


def service_settings(service: str) -> dict[str, bool]:
    module = importlib.import_module(SERVICES[service][0])
    names: dict[str, bool] = env_names(module.Settings)
    return names


def secret_keys(overlay: str) -> tuple[set[str], set[str]]:
    """(required, optional) keys of the Secret, as the overlay's secrets.example.env lists them."""
    required, optional = set(), set()
    for line in (K8S / "overlays" / overlay / "secrets.example.env").read_text().splitlines():
        if m := re.fullmatch(r"([A-Z0-9_]+)=", line):
            required.add(m[1])
        elif m := re.fullmatch(r"# ([A-Z0-9_]+)=", line):
            optional.add(m[1])
    return required, optional


def container_env(target: str, workload: Object) -> dict[str, str]:
    """The environment the container gets, ``$(VAR)`` expanded as the kubelet does (envFrom
    first, then env in order); a Secret's value stands as ``<secret:KEY>``."""
    config = one(target, "ConfigMap", CONFIG)["data"]
    spec = container(workload)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        assert source == {"configMapRef": {"name": CONFIG}}, f"unexpected envFrom {source}"
        env.update(config)
    for var in spec.get("env", []):
        if "value" in var:
            unresolved = [
                r for r in re.findall(r"\$\(([A-Z0-9_]+)\)", var["value"]) if r not in env
            ]
            assert not unresolved, f"{var['name']} refers to undefined {unresolved}"
            env[var["name"]] = re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env[m[1]], var["value"])
        elif ref := var["valueFrom"].get("secretKeyRef"):
            assert ref["name"] == SECRET
            env[var["name"]] = f"<secret:{ref['key']}>"
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == CONFIG and ref["key"] in config
            env[var["name"]] = config[ref["key"]]
    return env


def workloads(target: str) -> Iterator[tuple[str, Object, dict[str, bool]]]:
    """(name, workload, the settings it reads) for each service Deployment and the init Job."""
    for service in SERVICES:
        yield service, one(target, "Deployment", service), service_settings(service)
    yield "init", one(target, "Job", "tickwatch-init"), INIT_SETTINGS


def test_every_kustomization_builds_and_validates_against_the_kubernetes_schemas() -> None:
    assert {f"overlays/{o}" for o in OVERLAYS} <= set(built())
    problems = []
    # The same object comes out of several kustomizations (a part alone, the whole overlay):
    # validate each distinct one once (about 50 ms each).
    distinct: dict[str, tuple[str, Object]] = {}
    for target, objs in built().items():
        assert objs, f"{target} builds to nothing"
        for obj in objs:
            distinct.setdefault(json.dumps(obj, sort_keys=True), (target, obj))
    for target, obj in distinct.values():
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{target} {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_in_the_manifests_only_referred_to(overlay: str) -> None:
    target = f"overlays/{overlay}"
    assert not objects(target, "Secret"), "the Secret is created out of band, never committed"
    required, optional = secret_keys(overlay)
    for obj in built()[target]:
        text = yaml.safe_dump(obj)
        for key in ("PASSWORD", "SECRET", "API_KEY"):
            for match in re.finditer(rf"name: \w*{key}\w*\n\s+value: (.*)", text):
                pytest.fail(f"{obj['metadata']['name']} sets a {key} inline: {match[1]}")
    refs = {
        (var["valueFrom"]["secretKeyRef"]["key"], var["valueFrom"]["secretKeyRef"].get("optional"))
        for obj in objects(target)
        if obj["kind"] in ("Deployment", "StatefulSet", "Job")
        for var in container(obj).get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert {k for k, opt in refs if not opt} <= required
    assert {k for k, opt in refs if opt} <= optional
    assert required | optional == {k for k, _ in refs}, "secrets.example.env lists unused keys"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_a_service_requires_reaches_its_container(overlay: str) -> None:
    target = f"overlays/{overlay}"
    for name, workload, settings in workloads(target):
        env = container_env(target, workload)
        missing = sorted(n for n, required in settings.items() if required and n not in env)
        assert not missing, f"{overlay}: {name} lacks required {missing}"
    # The composed URLs are URLs of the servers the ConfigMap names.
    env = container_env(target, one(target, "Deployment", "gateway"))
    config = one(target, "ConfigMap", CONFIG)["data"]
    assert env["DATABASE_URL"] == (
        f"postgresql://{config['DATABASE_USER']}:<secret:DATABASE_PASSWORD>@"
        f"{config['DATABASE_HOST']}:{config['DATABASE_PORT']}/{config['DATABASE_NAME']}"
        f"{config['DATABASE_QUERY']}"
    )
    assert env["REDIS_URL"].startswith(f"{config['REDIS_SCHEME']}://:<secret:REDIS_PASSWORD>@")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_the_manifests_set_is_a_setting_or_feeds_one(overlay: str) -> None:
    """A misspelt name would be ignored by the services (extra="ignore"): none may be set."""
    target = f"overlays/{overlay}"
    read = set(INIT_SETTINGS).union(*(service_settings(s) for s in SERVICES))
    config = one(target, "ConfigMap", CONFIG)["data"]
    feeds: set[str] = set()
    for name, workload, _ in workloads(target):
        for var in container(workload).get("env", []):
            feeds.update(re.findall(r"\$\(([A-Z0-9_]+)\)", var.get("value", "")))
        unknown = {v["name"] for v in container(workload).get("env", [])} - read - feeds
        assert not unknown, f"{overlay}: {name} sets {sorted(unknown)}, which nothing reads"
    assert set(config) - read - feeds == set()
    assert config["OPS_HOST"] == "0.0.0.0", "the probes reach the ops server from outside the pod"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_a_service_rolls_out_alone_with_its_own_image_tag(overlay: str, service: str) -> None:
    alone = f"overlays/{overlay}/{service}"
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects(alone)}
    expected = {("Deployment", service), ("Service", service), ("PodDisruptionBudget", service)}
    if service in ("gateway", "alert-engine"):
        expected.add(("HorizontalPodAutoscaler", service))
    assert kinds == expected
    assert all(o["metadata"]["namespace"] == "tickwatch" for o in objects(alone))
    image = container(one(alone, "Deployment", service))["image"]
    own = yaml.safe_load((K8S / alone / "kustomization.yaml").read_text())["images"]
    assert own == [{"name": f"tickwatch-{service}", "newTag": image.rsplit(":", 1)[1]}]
    # The whole overlay runs exactly what the service's own kustomization says.
    assert one(f"overlays/{overlay}", "Deployment", service) == one(alone, "Deployment", service)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_runs_non_root_read_only_probed_on_its_ops_port(service: str) -> None:
    target = f"base/{service}"
    deployment = one(target, "Deployment", service)
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment)
    port = SERVICES[service][1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001, "the Dockerfiles' tickwatch user"
    assert pod["enableServiceLinks"] is False, "service links would set e.g. PORTFOLIO_PORT"
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["resources"]["requests"] and spec["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        assert spec[probe]["httpGet"]["path"] == path
        assert ports[spec[probe]["httpGet"]["port"]] == port
    port_var = f"{service.upper().replace('-', '_')}_PORT"
    assert port_var in service_settings(service)
    assert {"name": port_var, "value": str(port)} in spec["env"]
    service_obj = one(target, "Service", service)
    assert [p["port"] for p in service_obj["spec"]["ports"]] == [port]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service_obj["spec"]["selector"].items() <= labels.items()
    pdb = one(target, "PodDisruptionBudget", service)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_gateway_metrics_are_scraped_on_its_ops_port_which_its_service_hides() -> None:
    """/metrics is only on GATEWAY_OPS_PORT (issue 13 item 5): the pods say where Prometheus
    finds it, the Service (the public API's way in) does not expose it."""
    deployment = one("base/gateway", "Deployment", "gateway")
    spec = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert "GATEWAY_OPS_PORT" in service_settings("gateway")
    assert {"name": "GATEWAY_OPS_PORT", "value": str(ports["ops"])} in spec["env"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["ops"])
    assert annotations["prometheus.io/path"] == "/metrics"
    service = one("base/gateway", "Service", "gateway")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_the_alert_engine_never_outnumbers_the_tick_partitions() -> None:
    deployment = one("base/alert-engine", "Deployment", "alert-engine")
    hpa = one("base/alert-engine", "HorizontalPodAutoscaler", "alert-engine")
    assert "replicas" not in deployment["spec"], "the HPA owns the count"
    assert hpa["spec"]["maxReplicas"] == SYMBOL_PARTITIONS
    for overlay in OVERLAYS:
        target = f"overlays/{overlay}"
        assert one(target, "HorizontalPodAutoscaler", "alert-engine") == hpa | {
            "metadata": hpa["metadata"] | {"namespace": "tickwatch"}
        }


def test_the_gateway_scales_on_an_autoscaler() -> None:
    hpa = one("base/gateway", "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_the_init_job_runs_the_init_command() -> None:
    job = one("overlays/prod", "Job", "tickwatch-init")
    assert container(job)["command"] == ["python", "-m", "tickwatch_devstack", "init"]
    dockerfile = (ROOT / "libs" / "devstack" / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "tickwatch_devstack", "init"]' in dockerfile


def test_dev_runs_the_servers_of_docker_compose_and_prod_none() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for server in ("kafka", "postgres", "redis", "mailpit"):
        workload = next(
            o
            for o in objects("overlays/dev")
            if o["kind"] in ("StatefulSet", "Deployment") and o["metadata"]["name"] == server
        )
        assert container(workload)["image"] == compose[server]["image"]
    prod_names = {o["metadata"]["name"] for o in objects("overlays/prod")}
    assert not prod_names & {"kafka", "postgres", "redis", "mailpit"}
    prod = one("overlays/prod", "ConfigMap", CONFIG)["data"]
    assert prod["MARKET_FALLBACK"] == "none"
    assert "example.internal" in prod["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_addresses_in_the_config_are_services_of_the_cluster_or_external(overlay: str) -> None:
    """A default such as PORTFOLIO_URL=http://127.0.0.1:8084 is wrong in a pod: each address
    names a Service of the overlay on its port (dev's servers too; prod's are external)."""
    target = f"overlays/{overlay}"
    config = one(target, "ConfigMap", CONFIG)["data"]
    ports = {
        (o["metadata"]["name"], p["port"])
        for o in objects(target, "Service")
        for p in o["spec"]["ports"]
    }
    assert config["PORTFOLIO_URL"] == "http://portfolio:8084"
    addresses = [("portfolio", 8084)]
    servers = [
        *(tuple(a.rsplit(":", 1)) for a in config["KAFKA_BOOTSTRAP_SERVERS"].split(",")),
        (config["DATABASE_HOST"], config["DATABASE_PORT"]),
        (config["REDIS_HOST"], config["REDIS_PORT"]),
        (config["SMTP_HOST"], config["SMTP_PORT"]),
    ]
    for host, port in servers:
        if overlay == "dev":
            addresses.append((host, int(port)))
        else:
            assert host.endswith(".example.internal"), f"prod runs no {host} of its own"
    assert set(addresses) <= ports, set(addresses) - ports


def test_prod_logs_every_workload_in_as_its_own_principal_over_tls_and_dev_does_not() -> None:
    """Each workload's user is the access map's principal, its password its own Secret key;
    the ACL script names exactly these principals. Dev stays on PLAINTEXT."""
    target = "overlays/prod"
    users = set()
    for name, workload, _ in workloads(target):
        env = container_env(target, workload)
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_USERNAME"] == principal(name), name
        key = "KAFKA_SASL_PASSWORD_" + name.upper().replace("-", "_")
        assert env["KAFKA_SASL_PASSWORD"] == f"<secret:{key}>", name
        users.add(f"User:{principal(name)}")
    assert (
        users == {b.principal for b in acl_bindings()} == {f"User:{principal(s)}" for s in ACCESS}
    )
    assert (ROOT / SCRIPT_PATH).is_file()
    for name, workload, _ in workloads("overlays/dev"):
        env = container_env("overlays/dev", workload)
        assert env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") == "PLAINTEXT", name
        assert not {v for v in env if v.startswith("KAFKA_SASL_")}, name


# Each consumer group setting -> the service whose principal joins it.
GROUP_SETTINGS = {
    "NOTIFIER_GROUP": "notifier",
    "ALERT_ENGINE_GROUP": "alert-engine",
    "ALERTS_CONSUMER_GROUP": "gateway",
    "CANDLE_CONSUMER_GROUP": "gateway",
}


def test_every_consumer_group_falls_under_its_principals_acl_prefix() -> None:
    """A group the ACLs do not cover is refused by the broker at the service's start."""
    for setting, service in GROUP_SETTINGS.items():
        settings = importlib.import_module(SERVICES[service][0]).Settings
        [field] = [f for n, f in settings.model_fields.items() if n.upper() == setting]
        prefixes = ACCESS[service].groups
        assert any(field.default.startswith(p) for p in prefixes), (setting, field.default)
        for overlay in OVERLAYS:
            env = container_env(
                f"overlays/{overlay}", one(f"overlays/{overlay}", "Deployment", service)
            )
            value = env.get(setting, field.default)
            assert any(value.startswith(p) for p in prefixes), (overlay, setting, value)
    grouped = {s for s, a in ACCESS.items() if a.groups}
    assert grouped == set(GROUP_SETTINGS.values())
