"""Offline checks of the deployment files: kustomize overlays, Kubernetes schemas, KEDA, compose.

Every overlay is rendered with ``kubectl kustomize`` (or a standalone ``kustomize``) and each
object validated against the pinned Kubernetes schemas shipped by ``kubernetes-validate``;
the KEDA ScaledObject against tests/deploy/keda-scaledobject.schema.json; docker-compose.yml
against the compose-spec schema vendored by ``check-jsonschema``. A missing tool skips outside
CI and fails in CI (LEVIATHAN_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from query.autonomy import read_status
from storage.queue import StreamLayout
from tests.deploy.k8s_refs import CLUSTER_SCOPED

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.32.0"
OVERLAYS = ["dev", "prod", "managed", "cluster", "staging"]


def _need(what: str) -> None:
    if os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} not available")


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay as ``kubectl apply -k`` would send it. An overlay that generates its Secret
    (staging: ``make-secrets`` writes the git-ignored ``secrets.env``) is rendered from a copy
    of k8s/ where its script has run, as an operator would run it."""
    path = ROOT / "k8s" / "overlays" / overlay
    if not (path / "make-secrets").exists():
        return _build(path)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(ROOT / "k8s", copy, ignore=shutil.ignore_patterns("secrets.env"))
        script = copy / "overlays" / overlay / "make-secrets"
        subprocess.run([str(script)], check=True, capture_output=True, timeout=30)
        return _build(script.parent)


def _build(path: Path) -> list[dict[str, Any]]:
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(path)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(path)]
    else:
        _need("kustomize (or kubectl)")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(overlay: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = render(overlay)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # CRDs: checked against their own schemas below
        kv.validate(doc, K8S_VERSION, strict=True)
        # A namespaced object rendered without a namespace lands wherever kubectl points.
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], doc["metadata"]
        else:
            assert doc["metadata"].get("namespace") == "leviathan", (doc["kind"], doc["metadata"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_runs_non_root_read_only_with_probes(overlay: str) -> None:
    docs = render(overlay)
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    tiers = {"leviathan-ingest", "leviathan-consumer"}
    # the read tier runs on its own where reads are routed to it (prod and its children)
    split = overlay in ("prod", "managed", "cluster")
    assert set(deployments) == (tiers | {"leviathan-query"} if split else tiers)
    for dep in deployments.values():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["terminationGracePeriodSeconds"] >= 30
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in container
            assert "requests" in container["resources"]
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    assert services["leviathan-control-plane"]["spec"]["ports"][0]["port"] == 8000
    # Real Secrets never come from the repo: only an overlay whose script writes them into a
    # git-ignored file (staging) renders one.
    generated = (ROOT / "k8s" / "overlays" / overlay / "make-secrets").exists()
    assert generated or not by_kind(docs, "Secret")


def test_dev_overlay_uses_ndjson_on_a_pvc_and_one_consumer() -> None:
    docs = render("dev")
    config = next(
        c["data"]
        for c in by_kind(docs, "ConfigMap")
        if c["metadata"]["name"].startswith("leviathan-control-plane-config")
    )
    assert config["LEVIATHAN_CONTROL_PLANE_BACKEND"] == "ndjson"
    consumer = next(d for d in by_kind(docs, "Deployment") if "consumer" in d["metadata"]["name"])
    assert consumer["spec"]["replicas"] == 1
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in consumer["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["leviathan-ndjson"]
    assert not by_kind(docs, "ScaledObject")


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_ingest_mounts_the_autonomy_switch_it_reads(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    switch = next(
        c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == "leviathan-autonomy"
    )
    config = next(
        c["data"]
        for c in by_kind(docs, "ConfigMap")
        if c["metadata"]["name"].startswith("leviathan-control-plane-config")
    )
    path = PurePosixPath(config["LEVIATHAN_AUTONOMY_CONFIG_PATH"])
    ingest = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "leviathan-ingest"
    )
    pod = ingest["spec"]["template"]["spec"]
    volume = next(
        v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "leviathan-autonomy"
    )
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert str(path.parent) == mount["mountPath"]
    assert path.name in switch["data"]
    (tmp_path / path.name).write_text(switch["data"][path.name])
    status = read_status(tmp_path / path.name)
    assert status.autonomy_enabled is True
    assert status.source.startswith("configmap:")


def test_prod_overlay_has_tls_ingress_keda_and_postgres_dsn() -> None:
    docs = render("prod")
    ingress = by_kind(docs, "Ingress")[0]
    host = ingress["spec"]["rules"][0]["host"]
    assert host == ingress["spec"]["tls"][0]["hosts"][0] == "control-plane.example.com"
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    assert not [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-vars")]
    schema = json.loads((Path(__file__).parent / "keda-scaledobject.schema.json").read_text())
    (scaled,) = by_kind(docs, "ScaledObject")
    jsonschema.validate(scaled, schema)
    groups = {t["metadata"]["consumerGroup"] for t in scaled["spec"]["triggers"]}
    assert groups == {"writers"}
    for dep in by_kind(docs, "Deployment"):
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        assert any(e["name"] == "POSTGRES_DSN" for e in env)


def _paths(ingress: dict[str, Any]) -> dict[str, str]:
    rule = ingress["spec"]["rules"][0]["http"]["paths"]
    return {p["path"]: p["backend"]["service"]["name"] for p in rule}


@pytest.mark.parametrize("overlay", ["prod", "managed", "cluster"])
def test_reads_have_their_own_tier_and_the_ingress_splits_by_path(overlay: str) -> None:
    docs = render(overlay)
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    query = deployments["leviathan-query"]["spec"]["template"]["spec"]["containers"][0]
    assert query["args"] == ["query"]
    assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(query)
    ingest = deployments["leviathan-ingest"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LEVIATHAN_INGEST_SERVE_READS", "value": "false"} in ingest["env"]
    (hpa,) = [
        h for h in by_kind(docs, "HorizontalPodAutoscaler") if "query" in h["metadata"]["name"]
    ]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "leviathan-query"
    policies = [
        n
        for n in by_kind(docs, "NetworkPolicy")
        if n["spec"]["podSelector"].get("matchLabels")
        == {"app.kubernetes.io/name": "leviathan-query"}
    ]
    assert policies, "the query pods have no NetworkPolicy of their own"
    ingest_service = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    paths = _paths(by_kind(docs, "Ingress")[0])
    assert paths == {
        "/v1/events/ingest$": "leviathan-control-plane",
        "/v1/attempts/[^/]+/invalidate$": "leviathan-control-plane",
        "/v1/backlog/suggest$": "leviathan-control-plane",
        "/": "leviathan-query",
    }
    assert set(paths.values()) <= ingest_service
    # every write route the ingest app serves is sent to ingest, every read to the query tier
    for path, method in (
        ("/v1/events/ingest", "POST"),
        ("/v1/attempts/att-1/invalidate", "POST"),
        ("/v1/backlog/suggest", "POST"),
        ("/v1/attempts/att-1", "GET"),
        ("/v1/events", "GET"),
        ("/console", "GET"),
    ):
        matching = [p for p in paths if p != "/" and re.match(p, path)]
        target = paths[matching[0]] if matching else paths["/"]
        expected = "leviathan-control-plane" if method == "POST" else "leviathan-query"
        assert target == expected, (path, target)


def test_dev_overlay_keeps_reads_in_ingest() -> None:
    docs = render("dev")
    assert "leviathan-query" not in {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}


def test_keda_schema_rejects_a_trigger_without_a_consumer_group() -> None:
    schema = json.loads((Path(__file__).parent / "keda-scaledobject.schema.json").read_text())
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "triggers": [
                {"type": "redis-streams", "metadata": {"address": "r:6379", "stream": "s"}}
            ],
        },
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_worker_job_template_validates_and_reads_the_control_plane_secret() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    job = yaml.safe_load((ROOT / "k8s" / "workers" / "job-template.yaml").read_text())
    job["metadata"]["name"] = "leviathan-worker-x"  # generateName is filled in by the API
    kv.validate(job, K8S_VERSION, strict=True)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "leviathan-control-plane" in env["CONTROL_PLANE_URL"]["value"]
    ref = env["LEVIATHAN_CONTROL_PLANE_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {
        "name": "leviathan-control-plane-secrets",
        "key": "LEVIATHAN_CONTROL_PLANE_TOKEN",
    }


def test_compose_file_validates_against_the_compose_spec() -> None:
    try:
        vendor = resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
        schema = json.loads((vendor / "compose-spec.json").read_text())
    except ModuleNotFoundError:
        _need("check-jsonschema (vendors the compose-spec schema)")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(compose, schema)
    services = compose["services"]
    for name in ("ingest", "consumer"):
        assert "container_name" not in services[name]
        assert "ports" not in services[name]
        assert "healthcheck" in services[name]
    redis_args = services["redis"]["command"]
    assert "everysec" in redis_args
    assert "noeviction" in redis_args
    assert all("healthcheck" in s for n, s in services.items() if n != "migrate")


SCALED_OVERLAYS = ["prod", "managed", "cluster"]


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((Path(__file__).parent / name).read_text())
    return schema


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = next(
        c["data"]
        for c in by_kind(docs, "ConfigMap")
        if c["metadata"]["name"].startswith("leviathan-control-plane-config")
    )
    return data


@pytest.mark.parametrize("overlay", SCALED_OVERLAYS)
def test_consumers_scale_on_the_lag_of_every_partition(overlay: str) -> None:
    """One lag trigger per partition stream of the configured count, none on pending entries
    (a consumer holds at most a batch per partition pending: that count never grows)."""
    docs = render(overlay)
    (scaled,) = by_kind(docs, "ScaledObject")
    jsonschema.validate(scaled, _schema("keda-scaledobject.schema.json"))
    partitions = int(_config(docs)["LEVIATHAN_PARTITIONS"])
    triggers = scaled["spec"]["triggers"]
    streams = [t["metadata"]["stream"] for t in triggers]
    assert sorted(streams) == sorted(StreamLayout(partitions=partitions).streams())
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == "writers"
        assert "pendingEntriesCount" not in meta
        assert int(meta["lagCount"]) > 0
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    auths = {t["metadata"]["name"] for t in by_kind(docs, "TriggerAuthentication")}
    for auth in by_kind(docs, "TriggerAuthentication"):
        jsonschema.validate(auth, _schema("keda-triggerauthentication.schema.json"))
    assert {t["authenticationRef"]["name"] for t in triggers if "authenticationRef" in t} <= auths


def test_keda_schema_refuses_a_lag_trigger_without_activation() -> None:
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "triggers": [
                {
                    "type": "redis-cluster-streams",
                    "metadata": {
                        "addresses": "a:6379",
                        "stream": "s",
                        "consumerGroup": "g",
                        "lagCount": "10",
                    },
                }
            ],
        },
    }
    with pytest.raises(jsonschema.ValidationError, match="activationLagCount"):
        jsonschema.validate(bad, _schema("keda-scaledobject.schema.json"))
    meta = bad["spec"]["triggers"][0]["metadata"]  # type: ignore[index]
    meta["activationLagCount"] = "1"
    jsonschema.validate(bad, _schema("keda-scaledobject.schema.json"))
    del meta["addresses"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _schema("keda-scaledobject.schema.json"))


def test_keda_operator_may_reach_the_in_cluster_redis() -> None:
    docs = render("prod")
    (scaled,) = by_kind(docs, "ScaledObject")
    port = {int(t["metadata"]["address"].rsplit(":", 1)[1]) for t in scaled["spec"]["triggers"]}
    assert port == {6379}
    admitted = [
        rule
        for policy in by_kind(docs, "NetworkPolicy")
        if policy["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "redis"}
        for rule in policy["spec"]["ingress"]
        if any(
            peer.get("namespaceSelector", {}).get("matchLabels")
            == {"kubernetes.io/metadata.name": "keda"}
            for peer in rule["from"]
        )
    ]
    assert [p["port"] for rule in admitted for p in rule["ports"]] == [6379]


def _tier_env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """LEVIATHAN_REDIS_URL's env entry of each tier, by Deployment name."""
    found = {}
    for dep in by_kind(docs, "Deployment"):
        env = dep["spec"]["template"]["spec"]["containers"][0].get("env", [])
        found[dep["metadata"]["name"]] = next(e for e in env if e["name"] == "LEVIATHAN_REDIS_URL")
    return found


def test_managed_overlay_runs_no_datastore_in_the_cluster() -> None:
    docs = render("managed")
    assert not by_kind(docs, "StatefulSet")
    assert not [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "redis"]
    for entry in _tier_env(docs).values():
        assert entry["valueFrom"]["secretKeyRef"]["key"] == "LEVIATHAN_REDIS_URL"
    for dep in by_kind(docs, "Deployment"):
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        assert any(e["name"] == "POSTGRES_DSN" for e in env)


def test_cluster_overlay_keeps_arq_on_one_node_and_streams_on_the_cluster() -> None:
    docs = render("cluster")
    config = _config(docs)
    assert config["LEVIATHAN_REDIS_CLUSTER"] == "1"
    assert config["LEVIATHAN_REDIS_MIN_REPLICA_ACKS"] == "1"
    arq_host = config["LEVIATHAN_ARQ_REDIS_URL"].split("//")[1].split(":")[0]
    assert [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == arq_host]
    assert set(_tier_env(docs)) == {"leviathan-ingest", "leviathan-query", "leviathan-consumer"}
    (scaled,) = by_kind(docs, "ScaledObject")
    assert {t["type"] for t in scaled["spec"]["triggers"]} == {"redis-cluster-streams"}
    assert int(config["LEVIATHAN_PARTITIONS"]) % 3 == 0  # three shards, equal shares


def _statefulset(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind(docs, "StatefulSet") if d["metadata"]["name"] == name]
    return found


def test_staging_runs_both_datastores_on_volumes_with_probes_and_limits() -> None:
    docs = render("staging")
    for name, volume in (("postgres", "postgres-data"), ("redis", "redis-data")):
        sts = _statefulset(docs, name)
        assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == [volume]
        pod = sts["spec"]["template"]["spec"]
        assert volume not in {v["name"] for v in pod.get("volumes", [])}  # the PVC, no emptyDir
        (container,) = pod["containers"]
        assert {"readinessProbe", "livenessProbe"} <= set(container)
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert pod["securityContext"]["runAsNonRoot"] is True
    redis_args = _statefulset(docs, "redis")["spec"]["template"]["spec"]["containers"][0]["args"]
    settings = dict(zip(redis_args[::2], redis_args[1::2], strict=True))
    assert settings["--appendonly"] == "yes"
    assert settings["--maxmemory-policy"] == "noeviction"
    assert settings["--maxmemory"].endswith("mb")
    assert not by_kind(docs, "ScaledObject")  # no KEDA needed on an arbitrary cluster


def test_staging_migrates_before_the_consumers_start_and_its_secret_is_consistent() -> None:
    docs = render("staging")
    consumer = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "leviathan-consumer"
    )
    (init,) = consumer["spec"]["template"]["spec"]["initContainers"]
    assert init["args"] == ["migrate"]
    assert init["image"] == consumer["spec"]["template"]["spec"]["containers"][0]["image"]
    # `kustomize edit set image <base image>=<yours>` in the overlay retargets every tier
    base = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    overlay = yaml.safe_load(
        (ROOT / "k8s" / "overlays" / "staging" / "kustomization.yaml").read_text()
    )
    assert overlay["images"][0]["name"] == base["images"][0]["newName"]
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == "leviathan-control-plane-secrets"  # workers use it
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    password = values["POSTGRES_PASSWORD"]
    assert len(password) >= 32
    config = next(
        c["data"]
        for c in by_kind(docs, "ConfigMap")
        if c["metadata"]["name"].startswith("leviathan-control-plane-config")
    )
    assert config["LEVIATHAN_CONTROL_PLANE_BACKEND"] == "postgres"
    user, host, db = config["POSTGRES_USER"], config["POSTGRES_HOST"], config["POSTGRES_DB"]
    assert values["POSTGRES_DSN"] == f"postgresql://{user}:{password}@{host}:5432/{db}"
    assert len(values["LEVIATHAN_CONTROL_PLANE_TOKEN"]) >= 32
    # the file the values come from stays out of git
    ignored = (ROOT / "k8s" / "overlays" / "staging" / ".gitignore").read_text().split()
    assert "secrets.env" in ignored
    # two runs of the script make different secrets
    assert values != {
        k: base64.b64decode(v).decode()
        for k, v in by_kind(render("staging"), "Secret")[0]["data"].items()
    }
