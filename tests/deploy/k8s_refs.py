"""Offline reference checks of a rendered kustomize overlay (a list of Kubernetes objects).

``kubectl apply`` accepts objects whose references dangle — a pod naming a ConfigMap that is
not there, a Service whose selector matches no pod, a probe on a port the container does not
declare — and the mistake shows only in a live cluster (pods stuck in CreateContainerConfig,
endpoints empty, probes failing). :func:`problems` resolves every such reference inside the
rendering, namespace by namespace, and returns one line per dangling one. Secrets are never in
the repo: their references resolve against the documented template instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

# Kinds without a namespace; every other kind must carry one after rendering.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
        "StorageClass",
        "CustomResourceDefinition",
        "PriorityClass",
        "IngressClass",
        "ClusterIssuer",
    }
)
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


@dataclass(frozen=True)
class Pod:
    """The pod template of one workload, with where it lives."""

    owner: str  # "Kind/name", for messages
    namespace: str
    labels: dict[str, str]
    spec: Obj
    claim_templates: frozenset[str]


def namespace_of(obj: Obj) -> str | None:
    ns = obj.get("metadata", {}).get("namespace")
    return str(ns) if ns else None


def _name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pods(docs: list[Obj]) -> list[Pod]:
    out = []
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        template = doc["spec"]["template"]
        claims = frozenset(
            t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])
        )
        out.append(
            Pod(
                _name(doc),
                namespace_of(doc) or "",
                template.get("metadata", {}).get("labels", {}),
                template["spec"],
                claims,
            )
        )
    return out


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label set."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def _container_ports(container: Obj) -> tuple[set[str], set[int]]:
    ports = container.get("ports", [])
    return {p["name"] for p in ports if "name" in p}, {p["containerPort"] for p in ports}


def _pod_ports(pod: Pod) -> tuple[set[str], set[int]]:
    names: set[str] = set()
    numbers: set[int] = set()
    for c in _containers(pod.spec):
        n, p = _container_ports(c)
        names |= n
        numbers |= p
    return names, numbers


def _port_declared(port: str | int, names: set[str], numbers: set[int]) -> bool:
    return port in names if isinstance(port, str) else port in numbers


def _index(docs: list[Obj], kind: str) -> dict[tuple[str, str], Obj]:
    return {(namespace_of(d) or "", d["metadata"]["name"]): d for d in docs if d["kind"] == kind}


def problems(docs: list[Obj], external_secrets: list[Obj]) -> list[str]:
    """Every reference in ``docs`` that does not resolve, one line each (empty when sound).

    ``external_secrets`` are the Secrets an operator creates by hand (from the template), in
    the namespace they are documented for.
    """
    found: list[str] = []
    found += _namespaces(docs)
    found += _pod_references(docs, external_secrets)
    found += _selectors(docs)
    found += _targets(docs)
    return found


def _namespaces(docs: list[Obj]) -> list[str]:
    declared = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    found = []
    for d in docs:
        ns = namespace_of(d)
        if d["kind"] in CLUSTER_SCOPED:
            if ns:
                found.append(f"{_name(d)} is cluster-scoped but has namespace {ns!r}")
        elif not ns:
            found.append(f"{_name(d)} has no namespace (apply -k puts it in the current one)")
        elif declared and ns not in declared:
            found.append(f"{_name(d)} is in namespace {ns!r}, not one the overlay creates")
    return found


@dataclass(frozen=True)
class Ref:
    """One reference a pod makes to a ConfigMap, Secret or PersistentVolumeClaim."""

    kind: str
    name: str
    key: str | None = None
    optional: bool = False


def _env_refs(container: Obj) -> Iterator[Ref]:
    for source in container.get("envFrom", []):
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if field in source:
                r = source[field]
                yield Ref(kind, r["name"], None, bool(r.get("optional")))
    for env in container.get("env", []):
        value_from = env.get("valueFrom", {})
        for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if field in value_from:
                r = value_from[field]
                yield Ref(kind, r["name"], r["key"], bool(r.get("optional")))


def _volume_refs(volume: Obj) -> Iterator[Ref]:
    if "configMap" in volume:
        r = volume["configMap"]
        yield Ref("ConfigMap", r["name"], None, bool(r.get("optional")))
    if "secret" in volume:
        r = volume["secret"]
        yield Ref("Secret", r["secretName"], None, bool(r.get("optional")))
    if "persistentVolumeClaim" in volume:
        yield Ref("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def pod_refs(pod: Pod) -> Iterator[Ref]:
    for c in _containers(pod.spec):
        yield from _env_refs(c)
    for volume in pod.spec.get("volumes", []):
        yield from _volume_refs(volume)


def _keys(obj: Obj) -> set[str]:
    return set(obj.get("data", {})) | set(obj.get("stringData", {}))


def _pod_references(docs: list[Obj], external_secrets: list[Obj]) -> list[str]:
    tables = {
        "ConfigMap": _index(docs, "ConfigMap"),
        "Secret": _index(docs + external_secrets, "Secret"),
        "PersistentVolumeClaim": _index(docs, "PersistentVolumeClaim"),
    }
    found = []
    for pod in pods(docs):
        for ref in pod_refs(pod):
            target = tables[ref.kind].get((pod.namespace, ref.name))
            if target is None and not ref.optional:
                found.append(
                    f"{pod.owner} uses {ref.kind} {ref.name!r}, absent in {pod.namespace!r}"
                )
            elif target is not None and ref.key is not None and ref.key not in _keys(target):
                found.append(
                    f"{pod.owner} uses key {ref.key!r} of {ref.kind} {ref.name!r}: no such key"
                )
        volumes = {v["name"] for v in pod.spec.get("volumes", [])} | pod.claim_templates
        for c in _containers(pod.spec):
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    found.append(f"{pod.owner} mounts volume {mount['name']!r}: not declared")
        found += _probe_ports(pod)
    return found


def _probe_ports(pod: Pod) -> list[str]:
    found = []
    for c in _containers(pod.spec):
        names, numbers = _container_ports(c)
        for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = c.get(probe_kind)
            if not probe:
                continue
            for handler in ("httpGet", "tcpSocket", "grpc"):
                if handler in probe and not _port_declared(probe[handler]["port"], names, numbers):
                    found.append(
                        f"{pod.owner} container {c['name']!r} {probe_kind} uses port "
                        f"{probe[handler]['port']!r}, which the container does not declare"
                    )
    return found


def _matching_pods(all_pods: list[Pod], namespace: str, selector: Obj) -> list[Pod]:
    return [
        p for p in all_pods if p.namespace == namespace and selector_matches(selector, p.labels)
    ]


def _service(d: Obj, ns: str, all_pods: list[Pod]) -> list[str]:
    if "selector" not in d["spec"]:
        return []  # endpoints managed by hand
    matched = _matching_pods(all_pods, ns, {"matchLabels": d["spec"]["selector"]})
    if not matched:
        return [f"{_name(d)} selector {d['spec']['selector']} matches no pod"]
    found = []
    for port in d["spec"].get("ports", []):
        target = port.get("targetPort", port["port"])
        for pod in matched:
            if not _port_declared(target, *_pod_ports(pod)):
                found.append(f"{_name(d)} targetPort {target!r} is not a port of {pod.owner}")
    return found


def _selectors(docs: list[Obj]) -> list[str]:
    all_pods = pods(docs)
    found = []
    for d in docs:
        ns = namespace_of(d) or ""
        kind = d["kind"]
        if kind == "Service":
            found += _service(d, ns, all_pods)
        elif kind == "NetworkPolicy":
            found += _network_policy(d, ns, all_pods)
        elif kind == "PodDisruptionBudget" and not _matching_pods(
            all_pods, ns, d["spec"]["selector"]
        ):
            found.append(f"{_name(d)} selector matches no pod")
        elif kind in WORKLOADS and not selector_matches(
            d["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]
        ):
            found.append(f"{_name(d)} selector does not match its own pod template")
    return found


def _network_policy(d: Obj, ns: str, all_pods: list[Pod]) -> list[str]:
    found = []
    targets = _matching_pods(all_pods, ns, d["spec"]["podSelector"])
    if not targets:
        found.append(f"{_name(d)} podSelector matches no pod")
    for rule in d["spec"].get("ingress", []):
        for peer in rule.get("from", []):
            # A podSelector alone means pods of this namespace: they must exist. With a
            # namespaceSelector the peers live elsewhere (workers, the ingress controller).
            if (
                "podSelector" in peer
                and "namespaceSelector" not in peer
                and not _matching_pods(all_pods, ns, peer["podSelector"])
            ):
                found.append(f"{_name(d)} ingress peer {peer['podSelector']} matches no pod")
        # A rule may list a port of a datastore that runs outside the cluster in some
        # setups (PostgreSQL), but a rule none of whose ports a selected pod serves is dead.
        ports = [p["port"] for p in rule.get("ports", []) if "port" in p]
        if (
            ports
            and targets
            and not any(_port_declared(port, *_pod_ports(pod)) for port in ports for pod in targets)
        ):
            found.append(f"{_name(d)} allows ports {ports}, which no selected pod serves")
    return found


def _targets(docs: list[Obj]) -> list[str]:
    workloads = {(namespace_of(d) or "", d["kind"], d["metadata"]["name"]) for d in docs}
    services = _index(docs, "Service")
    found = []
    for d in docs:
        ns = namespace_of(d) or ""
        if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            ref = d["spec"]["scaleTargetRef"]
            kind = ref.get("kind", "Deployment")
            if (ns, kind, ref["name"]) not in workloads:
                found.append(f"{_name(d)} scales {kind}/{ref['name']}, absent in {ns!r}")
        elif d["kind"] == "Ingress":
            for rule in d["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]
                    svc = services.get((ns, backend["name"]))
                    if svc is None:
                        found.append(f"{_name(d)} routes to Service {backend['name']!r}, absent")
                        continue
                    port = backend["port"]
                    ports = svc["spec"]["ports"]
                    if not any(
                        p["port"] == port.get("number") or p.get("name") == port.get("name")
                        for p in ports
                    ):
                        found.append(f"{_name(d)} routes to port {port} not on {_name(svc)}")
    return found
