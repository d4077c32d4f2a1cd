"""Manifests and docs may only carry environment names the settings classes really read.

The names come from the fields' validation aliases (leviathan_cp.envtable); a variable in the
ConfigMap, compose, .env.example, the Deployments' env or the worker-facing docs that no
settings class reads fails here, and the docs' configuration table must be the generated one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from leviathan_cp.envtable import all_env_names, markdown

ROOT = Path(__file__).resolve().parents[2]
# Read by the postgres image itself (compose), not by the control plane.
POSTGRES_IMAGE_ONLY = {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"}
DATASTORE_IMAGES = ("postgres:", "redis:")


def _k8s_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_configmap_keys_are_read_by_settings() -> None:
    (config,) = _k8s_docs(ROOT / "k8s" / "base" / "configmap.yaml")
    unknown = set(config["data"]) - all_env_names()
    assert not unknown, f"ConfigMap carries variables no settings class reads: {unknown}"


def test_secret_template_and_deployment_env_are_read_by_settings() -> None:
    names: set[str] = set()
    (secret,) = _k8s_docs(ROOT / "k8s" / "base" / "secret.template.yaml")
    names |= set(secret["stringData"])
    for path in (ROOT / "k8s").rglob("*.yaml"):
        if "workers" in path.parts:
            continue  # the worker Job's env is read by the worker, not by us
        for doc in _k8s_docs(path):
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                if container.get("image", "").startswith(DATASTORE_IMAGES):
                    continue  # staging's PostgreSQL: its env is read by the postgres image
                names |= {e["name"] for e in container.get("env", [])}
    assert names
    assert not names - all_env_names()


def test_compose_env_is_read_by_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("ingest", "consumer", "migrate"):
        env = set(compose["services"][name]["environment"])
        assert env, name
        assert not env - all_env_names(), name


def test_env_example_names_are_read_by_settings() -> None:
    text = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert "LEVIATHAN_CONTROL_PLANE_TOKEN" in names
    assert not names - all_env_names() - POSTGRES_IMAGE_ONLY


def test_operations_guide_table_matches_the_settings_classes() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    match = re.search(r"<!-- envtable:start -->\n(.*?)<!-- envtable:end -->", doc, re.DOTALL)
    assert match, "docs/operations.md lost its envtable markers"
    assert match.group(1) == markdown(), "regenerate with: python -m leviathan_cp.envtable"


def test_env_names_are_the_contract_names() -> None:
    names = all_env_names()
    for required in (
        "LEVIATHAN_CONTROL_PLANE_TOKEN",
        "LEVIATHAN_CONTROL_PLANE_TOKENS",
        "LEVIATHAN_CONTROL_PLANE_TOKEN_FILE",
        "LEVIATHAN_CONTROL_PLANE_BACKEND",
        "LEVIATHAN_NDJSON_DIR",
        "POSTGRES_DSN",
        "LEVIATHAN_API_PORT",
        "LEVIATHAN_REDIS_URL",
    ):
        assert required in names
