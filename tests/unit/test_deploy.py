"""The deployment files agree with the code: the broker permissions equal SERVICE_PERMISSIONS, the
shipped configurations load and never pair "production" with the sandbox, each service is given
only its own secrets (and all it needs), and health checks, probes and scrapes use the internal ports.
Pure: files are parsed, nothing is started (but the RabbitMQ entrypoint script, with a stub broker)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.broker_access import SERVICE_PERMISSIONS, Permissions
from shared.settings import SERVICE_NAMES, AmqpSettings, Settings, load_settings, secret_environment_names

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DEFINITIONS = REPO / "deploy" / "rabbitmq" / "definitions.json"
COMPOSE = REPO / "docker-compose.yml"
DEMO = REPO / "config" / "demo.toml"
# Long enough for every secret's rule (the launch key needs 32 characters).
DUMMY = "dummy-secret-value-0123456789abcdefghijklmnop"
SERVICE_USERS = {f"evtopup_{service}": service for service in SERVICE_NAMES}


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_objects(kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml_documents(path):
            if doc.get("kind") == kind:
                yield path, doc


@pytest.fixture(scope="module")
def configmap_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    [(_, configmap)] = list(k8s_objects("ConfigMap"))
    path = tmp_path_factory.mktemp("k8s") / "evtopup.toml"
    path.write_text(configmap["data"]["evtopup.toml"])
    return path


def example_secrets() -> dict[str, list[str]]:
    """Secret name -> its keys, from secret.example.yaml."""
    return {doc["metadata"]["name"]: list(doc["stringData"]) for doc in yaml_documents(K8S / "secret.example.yaml")}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container_secret_env(container: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(the Secrets mounted whole with envFrom, the variable names this container takes from Secrets)."""
    secrets = example_secrets()
    refs = [source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source]
    names = [name for ref in refs for name in secrets[ref]]
    names += [var["name"] for var in container.get("env", []) if "secretKeyRef" in var.get("valueFrom", {})]
    return refs, names


def deployments() -> dict[str, dict[str, Any]]:
    found = {}
    for _, doc in k8s_objects("Deployment"):
        [container] = pod_spec(doc)["containers"]
        assert container["args"][0] == "run"
        found[container["args"][1]] = doc
    assert set(found) == set(SERVICE_NAMES)
    return found


def dummy_env(names: list[str]) -> dict[str, str]:
    return dict.fromkeys(names, DUMMY)


# --- RabbitMQ permissions -------------------------------------------------------------------------


def test_definitions_grant_each_service_user_exactly_its_permissions() -> None:
    definitions = json.loads(DEFINITIONS.read_text())
    granted = {
        entry["user"]: (entry["vhost"], Permissions(entry["configure"], entry["write"], entry["read"]))
        for entry in definitions["permissions"]
    }
    assert len(granted) == len(definitions["permissions"]), "a user's permissions are given twice"
    # Only the services' users: the operator's and the administrator's come from the environment.
    assert set(granted) == set(SERVICE_USERS)
    for user, service in SERVICE_USERS.items():
        assert granted[user] == ("evtopup", SERVICE_PERMISSIONS[service])
    # The users named there are the configuration's defaults.
    for service in SERVICE_NAMES:
        assert AmqpSettings.model_fields[f"{service}_username"].default == f"evtopup_{service}"


def test_the_topology_operator_example_grants_the_same_permissions() -> None:
    permissions = [doc for doc in yaml_documents(K8S / "rabbitmq-users.example.yaml") if doc["kind"] == "Permission"]
    granted = {doc["spec"]["user"]: doc["spec"] for doc in permissions}
    for user, service in SERVICE_USERS.items():
        spec = granted[user]
        assert spec["vhost"] == "evtopup"
        assert Permissions(**spec["permissions"]) == SERVICE_PERMISSIONS[service]


def test_the_compose_broker_entrypoint_creates_every_user_the_definitions_grant(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "docker-entrypoint.sh").write_text('#!/bin/sh\necho "broker started: $*"\n')
    # chown as the image runs it (root, with a rabbitmq user), recorded instead of done.
    (stub / "chown").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "chown.log"}\n')
    for command in ("docker-entrypoint.sh", "chown"):
        (stub / command).chmod(0o755)
    tricky = 'pa"ss\\word'
    env = {
        "PATH": f"{stub}:{os.environ['PATH']}",
        "EVTOPUP_DEFINITIONS_DIR": str(tmp_path / "defs"),
        "RABBITMQ_OPERATOR_PASSWORD": tricky,
        "RABBITMQ_PAGE_PASSWORD": "page-pw",
        "RABBITMQ_PAYMENTS_PASSWORD": "payments-pw",
        "RABBITMQ_CREDITING_PASSWORD": "crediting-pw",
        "RABBITMQ_ADMIN_PASSWORD": "admin-pw",
    }
    script = str(REPO / "deploy" / "rabbitmq" / "entrypoint.sh")
    result = subprocess.run(
        [bash, script, "rabbitmq-server"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "broker started: rabbitmq-server"
    if os.geteuid() == 0:
        # Only the broker may read the file with the passwords.
        assert (tmp_path / "chown.log").read_text().startswith("rabbitmq:rabbitmq ")
    users_file = json.loads((tmp_path / "defs" / "00-users.json").read_text())
    passwords = {user["name"]: user["password"] for user in users_file["users"]}
    assert passwords == {
        "evtopup": tricky,
        "evtopup_page": "page-pw",
        "evtopup_payments": "payments-pw",
        "evtopup_crediting": "crediting-pw",
        "admin": "admin-pw",
    }
    # Users are imported before definitions.json (00- before 10-), which needs them for its permissions.
    topology = json.loads(DEFINITIONS.read_text())
    assert {entry["user"] for entry in topology["permissions"]} <= set(passwords)
    # The service users' permissions come only from definitions.json.
    assert {entry["user"] for entry in users_file["permissions"]} == {"evtopup", "admin"}
    assert {user["name"] for user in users_file["users"] if user["tags"]} == {"admin"}

    # A missing password stops the broker from starting.
    del env["RABBITMQ_PAYMENTS_PASSWORD"]
    result = subprocess.run(
        [bash, script, "rabbitmq-server"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 64
    assert "RABBITMQ_PAYMENTS_PASSWORD is empty" in result.stderr


# --- shipped configurations ------------------------------------------------------------------------


def all_secret_names() -> list[str]:
    return [name for keys in example_secrets().values() for name in keys]


def assert_no_free_balance(settings: Settings) -> None:
    sandboxes = [i for i, s in settings.integrations.items() if s.processor == "sandbox"]
    assert not (settings.deployment == "production" and sandboxes), "production with a sandbox credits unpaid"


def test_the_k8s_configuration_loads_and_never_credits_without_payment(configmap_toml: Path) -> None:
    settings = load_settings(configmap_toml, dummy_env(all_secret_names()), service=None)
    assert_no_free_balance(settings)
    # It ships the sandbox, so it must be (and say it is) a demo.
    assert settings.deployment == "demo"
    assert settings.csms.kind == "ledger"
    assert 'deployment = "demo"' in (K8S / "configmap.yaml").read_text()
    # Health and metrics on the internal ports, reachable by the kubelet and Prometheus.
    assert settings.services.internal_host == "0.0.0.0"  # noqa: S104


def test_every_toml_configuration_in_the_repository_is_safe() -> None:
    secrets = dummy_env(
        [
            "EVTOPUP__LAUNCH__SECRET",
            "EVTOPUP__CREDITING__API_TOKEN",
            "EVTOPUP__CSMS__API_TOKEN",
            "EVTOPUP__AMQP__PASSWORD",
            *(f"EVTOPUP__AMQP__{service.upper()}_PASSWORD" for service in SERVICE_NAMES),
        ]
    )
    for path in sorted(REPO.glob("config/*.toml")):
        text = path.read_text()
        integrations = re.findall(r"^\[integrations\.([a-z0-9_]+)\]", text, re.MULTILINE)
        env = secrets | {
            f"EVTOPUP__INTEGRATIONS__{i.upper()}__{key}": DUMMY
            for i in integrations
            for key in ("API_KEY", "WEBHOOK_SECRET")
        }
        assert_no_free_balance(load_settings(path, env, service=None))


# --- secrets: each service only its own ----------------------------------------------------------


def test_each_deployment_mounts_only_its_own_secrets_and_all_it_needs(configmap_toml: Path) -> None:
    for service, deployment in deployments().items():
        [container] = pod_spec(deployment)["containers"]
        refs, names = container_secret_env(container)
        assert refs == [f"evtopup-{service}-secrets"]
        assert names, service
        assert secret_environment_names(dummy_env(names), service) == [], service
        # ... and they are enough for the service to start.
        load_settings(configmap_toml, dummy_env(names), service=service)


def test_the_operator_secret_is_no_service_s_and_setup_gets_everything_it_needs(configmap_toml: Path) -> None:
    secrets = example_secrets()
    operator = secrets["evtopup-operator-secrets"]
    assert set(operator) == {"EVTOPUP__AMQP__PASSWORD", "EVTOPUP__DATABASES__ADMIN_PASSWORD"}
    for service in SERVICE_NAMES:
        assert sorted(secret_environment_names(dummy_env(operator), service)) == sorted(operator)
    [(_, job)] = list(k8s_objects("Job"))
    [container] = pod_spec(job)["containers"]
    refs, names = container_secret_env(container)
    assert sorted(refs) == sorted(secrets)
    settings = load_settings(configmap_toml, dummy_env(names), service=None)
    for service in [*SERVICE_NAMES, "admin"]:
        assert settings.databases.password(service) == DUMMY


def test_the_example_secrets_are_not_applied() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert not [r for r in kustomization["resources"] if "example" in r]
    # ... and carry no value.
    for _, secret in k8s_objects("Secret"):
        assert not any(secret["stringData"].values()), secret["metadata"]["name"]


def compose_environment(service: str) -> dict[str, str]:
    """A compose service's environment, with every ${VAR...} from .env replaced by a dummy value."""
    compose = yaml.safe_load(COMPOSE.read_text())
    environment = compose["services"][service]["environment"]
    assert isinstance(environment, dict)
    return {name: DUMMY if "${" in str(value) else str(value) for name, value in environment.items()}


def test_each_compose_service_gets_only_its_own_secrets_and_all_it_needs() -> None:
    for service in SERVICE_NAMES:
        environment = compose_environment(service)
        assert secret_environment_names(environment, service) == [], service
        assert "PGPASSWORD" not in environment
        environment.pop("EVTOPUP_CONFIG")
        settings = load_settings(DEMO, environment, service=service)
        assert settings.databases.dsn(service).startswith(f"postgresql://evtopup_{service}@")
    setup = compose_environment("setup")
    setup.pop("EVTOPUP_CONFIG")
    settings = load_settings(DEMO, setup, service=None)
    assert_no_free_balance(settings)


def test_the_compose_broker_users_have_the_services_passwords() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    broker = compose["services"]["rabbitmq"]["environment"]
    assert broker["RABBITMQ_OPERATOR_PASSWORD"].startswith("${EVTOPUP__AMQP__PASSWORD:")
    for service in SERVICE_NAMES:
        variable = f"EVTOPUP__AMQP__{service.upper()}_PASSWORD"
        assert broker[f"RABBITMQ_{service.upper()}_PASSWORD"].startswith("${" + variable + ":")
        assert compose["services"][service]["environment"][variable].startswith("${" + variable + ":")


# --- internal ports ------------------------------------------------------------------------------


def internal_ports(settings: Settings) -> dict[str, int]:
    return {service: getattr(settings.services, f"{service}_internal_port") for service in SERVICE_NAMES}


def public_ports(settings: Settings) -> dict[str, int]:
    return {service: getattr(settings.services, f"{service}_port") for service in SERVICE_NAMES}


def test_k8s_probes_and_scrapes_use_the_internal_port_which_no_service_exposes(configmap_toml: Path) -> None:
    settings = load_settings(configmap_toml, dummy_env(all_secret_names()), service=None)
    internal, public = internal_ports(settings), public_ports(settings)
    for service, deployment in deployments().items():
        [container] = pod_spec(deployment)["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"http": public[service], "internal": internal[service]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = container[probe]["httpGet"]["port"]
            assert ports.get(port, port) == internal[service], (service, probe)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(internal[service])
    for _, k8s_service in k8s_objects("Service"):
        for port in k8s_service["spec"]["ports"]:
            assert port["port"] not in internal.values()
            assert port["targetPort"] not in ("internal", *internal.values())
    assert not list(k8s_objects("Ingress")), "routes to the internal ports would need checking here"


def test_compose_health_checks_and_scrapes_use_the_internal_ports() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    settings = load_settings(DEMO, dummy_env(all_secret_names()), service=None)
    internal = internal_ports(settings)
    assert compose_environment("page")["EVTOPUP__SERVICES__INTERNAL_HOST"] == "0.0.0.0"  # noqa: S104
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [evtopup_job] = [job for job in prometheus["scrape_configs"] if job["job_name"] == "evtopup"]
    targets = {c["labels"]["component"]: c["targets"] for c in evtopup_job["static_configs"]}
    for service in SERVICE_NAMES:
        definition = compose["services"][service]
        test = " ".join(definition["healthcheck"]["test"])
        assert f"http://127.0.0.1:{internal[service]}/readyz" in test, service
        # The internal port is never published.
        assert not [p for p in definition.get("ports", []) if str(p).endswith(f":{internal[service]}")]
        assert targets[service] == [f"{service}:{internal[service]}"]


def test_the_image_health_check_uses_the_internal_ports_and_exposes_only_the_public_ones() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    settings = load_settings(DEMO, dummy_env(all_secret_names()), service=None)
    [checked] = re.findall(r'EVTOPUP_HEALTHCHECK_PORTS="([^"]*)"', dockerfile)
    assert sorted(int(p) for p in checked.split()) == sorted(internal_ports(settings).values())
    [exposed] = re.findall(r"^EXPOSE (.*)$", dockerfile, re.MULTILINE)
    assert sorted(int(p) for p in exposed.split()) == sorted(public_ports(settings).values())
