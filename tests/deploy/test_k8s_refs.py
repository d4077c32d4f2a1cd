"""Every reference inside each rendered overlay resolves (tests/deploy/k8s_refs.py), and each
check fails on the mistake it is there for: a rendering broken on purpose must be reported."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.k8s_refs import Obj, pod_refs, pods, problems, selector_matches
from tests.deploy.test_manifests import render

ROOT = Path(__file__).resolve().parents[2]


def template_secrets() -> list[Obj]:
    """The Secret operators create by hand, as its template documents it."""
    return [yaml.safe_load((ROOT / "k8s" / "base" / "secret.template.yaml").read_text())]


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return render(request.param)


def external_secrets(docs: list[Obj]) -> list[Obj]:
    """The hand-made Secret, unless the overlay generates its own (staging)."""
    generated = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    return [s for s in template_secrets() if s["metadata"]["name"] not in generated]


def overlays() -> list[str]:
    """Every overlay in k8s/overlays: a new one is checked without editing this file."""
    return sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir() if p.is_dir())


@pytest.mark.parametrize("overlay", overlays())
def test_every_reference_of_the_overlay_resolves(overlay: str) -> None:
    docs = render(overlay)
    assert problems(docs, external_secrets(docs)) == []


def _required_secret_keys(docs: list[Obj], secret: str) -> set[str]:
    return {
        ref.key
        for pod in pods(docs)
        for ref in pod_refs(pod)
        if ref.kind == "Secret" and ref.name == secret and ref.key and not ref.optional
    }


def _template_command_keys() -> set[str]:
    """The keys the template's `kubectl create secret` line creates."""
    text = (ROOT / "k8s" / "base" / "secret.template.yaml").read_text()
    command = text[text.index("kubectl -n leviathan create secret") :].split("\n# or")[0]
    return set(re.findall(r"--from-literal=([A-Z0-9_]+)=", command))


def test_the_secret_template_creates_every_key_the_overlays_require() -> None:
    """Following the template's command must not end in CreateContainerConfigError on any
    overlay that uses the hand-made Secret; and it asks for nothing no overlay reads."""
    (template,) = template_secrets()
    name = template["metadata"]["name"]
    required: set[str] = set()
    for overlay in overlays():
        docs = render(overlay)
        if external_secrets(docs):  # the overlay uses the hand-made Secret
            required |= _required_secret_keys(docs, name)
        else:  # staging: its generated Secret carries the same keys
            generated = next(d for d in docs if d["kind"] == "Secret")
            assert _required_secret_keys(docs, name) <= set(generated["data"])
            assert set(generated["data"]) <= set(template["stringData"])
    assert {"LEVIATHAN_CONTROL_PLANE_TOKEN", "POSTGRES_DSN", "LEVIATHAN_REDIS_URL"} <= required
    assert _template_command_keys() == required
    assert required <= set(template["stringData"])


def test_the_operations_guide_creates_the_same_keys_as_the_template() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    start = text.index("create secret generic leviathan-control-plane-secrets")
    command = text[start : text.index("\nkubectl apply", start)]
    assert set(re.findall(r"--from-literal=([A-Z0-9_]+)=", command)) == _template_command_keys()


def test_the_template_check_sees_a_missing_key() -> None:
    docs = render("prod")
    assert "POSTGRES_DSN" in _required_secret_keys(docs, "leviathan-control-plane-secrets")
    assert "POSTGRES_DSN" in _template_command_keys()
    spec = _one(docs, "Deployment", "leviathan-consumer")["spec"]["template"]["spec"]
    dsn = next(e for e in spec["containers"][0]["env"] if e["name"] == "POSTGRES_DSN")
    dsn["valueFrom"]["secretKeyRef"]["optional"] = True
    assert "POSTGRES_DSN" in _required_secret_keys(docs, "leviathan-control-plane-secrets")
    for tier in ("leviathan-ingest", "leviathan-query"):
        spec = _one(docs, "Deployment", tier)["spec"]["template"]["spec"]
        dsn = next(e for e in spec["containers"][0]["env"] if e["name"] == "POSTGRES_DSN")
        dsn["valueFrom"]["secretKeyRef"]["optional"] = True
    assert "POSTGRES_DSN" not in _required_secret_keys(docs, "leviathan-control-plane-secrets")


def _one(docs: list[Obj], kind: str, name: str) -> Obj:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _container(docs: list[Obj], deployment: str) -> Obj:
    container: Obj = _one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][
        0
    ]
    return container


def _secret_key_ref(docs: list[Obj]) -> Obj:
    env = _container(docs, "leviathan-ingest")["env"]
    ref: Obj = next(e for e in env if e["name"] == "LEVIATHAN_CONTROL_PLANE_TOKEN")["valueFrom"][
        "secretKeyRef"
    ]
    return ref


def _drop_namespace(docs: list[Obj]) -> None:
    del _one(docs, "ConfigMap", _configmap_name(docs))["metadata"]["namespace"]


def _configmap_name(docs: list[Obj]) -> str:
    ref = _container(docs, "leviathan-ingest")["envFrom"][0]["configMapRef"]
    return str(ref["name"])


def _rename_configmap_ref(docs: list[Obj]) -> None:
    _container(docs, "leviathan-consumer")["envFrom"][0]["configMapRef"]["name"] = "typo-config"


def _rename_secret_key(docs: list[Obj]) -> None:
    _secret_key_ref(docs)["key"] = "LEVIATHAN_TOKEN_TYPO"


def _rename_secret(docs: list[Obj]) -> None:
    _secret_key_ref(docs)["name"] = "leviathan-secrets-typo"


def _claim_in_other_namespace(docs: list[Obj]) -> None:
    spec = _one(docs, "Deployment", "leviathan-consumer")["spec"]["template"]["spec"]
    data = next(v for v in spec["volumes"] if v["name"] == "data")
    data.clear()
    data.update({"name": "data", "persistentVolumeClaim": {"claimName": "no-such-claim"}})


def _service_selector_typo(docs: list[Obj]) -> None:
    svc = _one(docs, "Service", "leviathan-control-plane")
    svc["spec"]["selector"] = {"app.kubernetes.io/name": "leviathan-ingset"}


def _service_target_port_typo(docs: list[Obj]) -> None:
    _one(docs, "Service", "redis")["spec"]["ports"][0]["targetPort"] = "rediss"


def _policy_selector_typo(docs: list[Obj]) -> None:
    policy = _one(docs, "NetworkPolicy", "leviathan-ingest-from-workers")
    policy["spec"]["podSelector"]["matchLabels"] = {"app.kubernetes.io/name": "ingest"}


def _policy_peer_typo(docs: list[Obj]) -> None:
    policy = _one(docs, "NetworkPolicy", "leviathan-datastores-from-tiers")
    expr = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    expr["values"] = ["ingest", "consumer"]


def _policy_port_typo(docs: list[Obj]) -> None:
    policy = _one(docs, "NetworkPolicy", "leviathan-ingest-from-workers")
    policy["spec"]["ingress"][0]["ports"][0]["port"] = 8080


def _probe_port_typo(docs: list[Obj]) -> None:
    _container(docs, "leviathan-consumer")["livenessProbe"]["httpGet"]["port"] = "http"


def _probe_port_number(docs: list[Obj]) -> None:
    spec = _one(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]
    spec["containers"][0]["livenessProbe"]["tcpSocket"]["port"] = 6380


def _undeclared_mount(docs: list[Obj]) -> None:
    _container(docs, "leviathan-ingest")["volumeMounts"].append(
        {"name": "cache", "mountPath": "/c"}
    )


def _pdb_selector_typo(docs: list[Obj]) -> None:
    pdb = _one(docs, "PodDisruptionBudget", "leviathan-consumer")
    pdb["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "consumer"}


def _hpa_target_typo(docs: list[Obj]) -> None:
    # The dev overlay deletes the HPA, so one is added there (prod's is rewritten instead).
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    if not hpas:
        hpas = [
            {
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "leviathan-ingest", "namespace": "leviathan"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "leviathan-ingest"}},
            }
        ]
        docs.append(hpas[0])
    hpas[0]["spec"]["scaleTargetRef"]["name"] = "leviathan-ingset"


BREAKAGES: dict[str, tuple[Callable[[list[Obj]], None], str]] = {
    "namespace missing": (_drop_namespace, "has no namespace"),
    "ConfigMap name": (_rename_configmap_ref, "uses ConfigMap 'typo-config', absent"),
    "Secret key": (_rename_secret_key, "uses key 'LEVIATHAN_TOKEN_TYPO'"),
    "Secret name": (_rename_secret, "uses Secret 'leviathan-secrets-typo', absent"),
    "PVC name": (_claim_in_other_namespace, "uses PersistentVolumeClaim 'no-such-claim'"),
    "Service selector": (_service_selector_typo, "Service/leviathan-control-plane selector"),
    "Service targetPort": (_service_target_port_typo, "targetPort 'rediss'"),
    "NetworkPolicy podSelector": (_policy_selector_typo, "podSelector matches no pod"),
    "NetworkPolicy peer": (_policy_peer_typo, "ingress peer"),
    "NetworkPolicy port": (_policy_port_typo, "allows ports [8080]"),
    "probe port name": (_probe_port_typo, "livenessProbe uses port 'http'"),
    "probe port number": (_probe_port_number, "livenessProbe uses port 6380"),
    "volume mount": (_undeclared_mount, "mounts volume 'cache'"),
    "PDB selector": (_pdb_selector_typo, "PodDisruptionBudget/leviathan-consumer selector"),
    "HPA target": (_hpa_target_typo, "scales Deployment/leviathan-ingset"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_rendering_is_reported(rendered: list[Obj], breakage: str) -> None:
    docs = copy.deepcopy(rendered)
    assert problems(docs, template_secrets()) == []
    break_it, expected = BREAKAGES[breakage]
    break_it(docs)
    found = problems(docs, template_secrets())
    assert any(expected in line for line in found), found


def test_the_original_overlay_bug_is_caught() -> None:
    """An overlay resource without a namespace: the claim the pods in leviathan mount."""
    docs = render("dev")
    claim = _one(docs, "PersistentVolumeClaim", "leviathan-ndjson")
    del claim["metadata"]["namespace"]
    found = problems(docs, template_secrets())
    assert "PersistentVolumeClaim/leviathan-ndjson has no namespace" in found[0]
    assert any(
        "uses PersistentVolumeClaim 'leviathan-ndjson', absent in 'leviathan'" in line
        for line in found
    )


def test_a_secret_only_in_another_namespace_does_not_resolve(rendered: list[Obj]) -> None:
    elsewhere = template_secrets()
    elsewhere[0]["metadata"]["namespace"] = "default"
    found = problems(rendered, elsewhere)
    assert any("uses Secret 'leviathan-control-plane-secrets', absent" in line for line in found)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]},
            {"a": "3"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        ({}, {"a": "1"}, True),
    ],
)
def test_label_selectors(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches
