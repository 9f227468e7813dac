"""contrib/kubernetes: every manifest of the base and of each overlay against the Kubernetes schemas.

Rendering uses `kubectl kustomize` when kubectl is installed (offline, exact). Without it, a
small stand-in renders what these overlays use (resources, namespace, configMapGenerator,
strategic-merge patches by name), so the schemas are still checked everywhere. The schemas
come with kubernetes-validate (a dev dependency): no network.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flipsync.fleet import parse_fleet

KUBE = Path(__file__).resolve().parent.parent / "contrib" / "kubernetes"
TARGETS = [KUBE / "base", *sorted((KUBE / "overlays").iterdir())]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as these patches need it: maps deep, lists of named maps by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        by_name = {x["name"]: x for x in base}
        merged = [_merge(by_name[x["name"]], x) if x["name"] in by_name else x for x in patch]
        return merged + [x for x in base if x["name"] not in {p["name"] for p in patch}]
    return patch


def _stand_in(directory: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for ref in spec.get("resources", []):
        path = directory / ref
        docs += _stand_in(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    for gen in spec.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in gen["files"]}
        docs = [
            d
            for d in docs
            if not (d["kind"] == "ConfigMap" and d["metadata"]["name"] == gen["name"])
        ]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            }
        )
    for patch in spec.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        docs = [
            _merge(d, body)
            if (d["kind"], d["metadata"]["name"]) == (body["kind"], body["metadata"]["name"])
            else d
            for d in docs
        ]
    if "namespace" in spec:
        for d in docs:
            if d["kind"] != "Namespace":
                d.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return copy.deepcopy(docs)


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run(
            [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    return _stand_in(directory)


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(target: Path) -> None:
    docs = render(target)
    kinds = sorted(d["kind"] for d in docs)
    assert {"ConfigMap", "Ingress", "Service", "StatefulSet"} <= set(kinds)
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_a_broken_manifest_is_caught() -> None:
    (sts,) = [d for d in render(KUBE / "base") if d["kind"] == "StatefulSet"]
    sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: p.name)
def test_each_fleet_yaml_is_a_valid_fleet_and_overlays_shard_by_key(target: Path) -> None:
    docs = render(target)
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    fleet = parse_fleet(
        yaml.safe_load(config["data"]["fleet.yaml"]), Path("/var/lib/flipsync/fleet")
    )
    assert fleet.env_dir == Path("/etc/flipsync/org-env")
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 1  # one key's budget and locks live in one pod
    names = {c["name"] for c in sts["spec"]["template"]["spec"]["containers"]}
    assert names == {"receiver", "scheduler"}
    if target.parent.name == "overlays":
        assert fleet.application_key == f"application-key-{target.name.removeprefix('key-')}"
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
            f"flipsync-{target.name}"
        }


def test_the_stand_in_renders_like_kubectl_where_both_exist() -> None:
    if not shutil.which("kubectl"):
        return  # nothing to compare with; the stand-in alone rendered everything above
    for target in TARGETS:
        ours = sorted((d["kind"], d["metadata"].get("namespace")) for d in _stand_in(target))
        theirs = sorted((d["kind"], d["metadata"].get("namespace")) for d in render(target))
        assert ours == theirs
