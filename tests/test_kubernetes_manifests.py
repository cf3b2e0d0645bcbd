"""The Kubernetes manifests: every overlay builds, validates against the schemas, and is hardened.

`kubectl kustomize` builds each overlay, and kubernetes-validate checks each
object against the Kubernetes OpenAPI schemas that the package ships, in
strict mode (unknown fields fail). It ships no schemas for custom resources,
so those are skipped by kind, each with the reason in CUSTOM_RESOURCES.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy_manifests import (
    K8S_DIR,
    OVERLAYS,
    containers,
    find_object,
    kustomize_build,
    overlay_objects,
    pod_spec,
    workloads,
)
from tests.servers import ROOT

# The version of deploy/k8s/overlays/aws/eksctl-cluster.yaml, and the newest
# version whose schemas the installed kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.32.0", "latest")
CUSTOM_RESOURCES = {
    "ServiceMonitor": "Prometheus Operator CRD; kubernetes-validate has no schema for it",
    "PrometheusRule": "Prometheus Operator CRD; kubernetes-validate has no schema for it",
}
SERVING_DEPLOYMENTS = ("classifier", "detector", "gateway")
RULE_FILE = ROOT / "monitoring" / "prometheus" / "rules" / "visionserve.yml"


@pytest.mark.parametrize("path", ["base", *(f"overlays/{name}" for name in OVERLAYS)])
def test_kustomize_builds(path: str) -> None:
    objects = [doc for doc in yaml.safe_load_all(kustomize_build(path)) if doc]
    assert objects


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_match_schema(overlay: str, version: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed; run `make install`", pytrace=False)
    if version == "latest":
        version = kubernetes_validate.latest_version()
    skipped = []
    for item in overlay_objects(overlay):
        if item["kind"] in CUSTOM_RESOURCES:
            skipped.append(item["kind"])
            continue
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = f"{item['kind']}/{item['metadata']['name']}"
            pytest.fail(f"{overlay}: {name} is invalid for {version}: {error.message}")
    assert set(skipped) == set(CUSTOM_RESOURCES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_in_visionserve_namespace(overlay: str) -> None:
    for item in overlay_objects(overlay):
        if item["kind"] != "Namespace":
            assert item["metadata"].get("namespace") == "visionserve", item["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_hardened(overlay: str) -> None:
    for workload in workloads(overlay_objects(overlay)):
        spec = pod_spec(workload)
        where = f"{overlay} {workload['kind']}/{workload['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (where, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (where, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (where, container["name"])
            resources = container["resources"]
            assert set(resources["requests"]) == {"cpu", "memory"}, (where, container["name"])
            assert set(resources["limits"]) == {"cpu", "memory"}, (where, container["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_deployments_have_probes(overlay: str) -> None:
    objects = overlay_objects(overlay)
    for name in SERVING_DEPLOYMENTS:
        container = find_object(objects, "Deployment", name)["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_deployments_autoscale(overlay: str) -> None:
    objects = overlay_objects(overlay)
    for name in SERVING_DEPLOYMENTS:
        deployment = find_object(objects, "Deployment", name)
        # The autoscaler sets the replica count, and a fixed one would undo it.
        assert "replicas" not in deployment["spec"], name
        autoscaler = find_object(objects, "HorizontalPodAutoscaler", name)
        assert autoscaler["spec"]["scaleTargetRef"]["name"] == name
        assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
        budget = find_object(objects, "PodDisruptionBudget", name)
        assert budget["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


def open_ingress_policies(objects: list[dict[str, Any]]) -> list[str]:
    """Return the NetworkPolicies with an ingress rule that admits any source."""
    names = []
    for item in objects:
        if item["kind"] != "NetworkPolicy":
            continue
        for rule in item["spec"].get("ingress", []):
            if not rule.get("from"):
                names.append(item["metadata"]["name"])
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_gateway_open_to_outside(overlay: str) -> None:
    objects = overlay_objects(overlay)
    deny = find_object(objects, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {}
    assert deny["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny["spec"]
    assert open_ingress_policies(objects) == ["gateway-ingress"]
    gateway = find_object(objects, "NetworkPolicy", "gateway-ingress")
    assert gateway["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "gateway"}}
    for item in objects:
        if item["kind"] == "Service":
            assert item["spec"].get("type", "ClusterIP") == "ClusterIP", item["metadata"]["name"]


def test_prometheus_rule_matches_rule_file() -> None:
    rule = yaml.safe_load((K8S_DIR / "base" / "prometheus-rule.yaml").read_text())
    expected = yaml.safe_load(RULE_FILE.read_text())
    assert rule["spec"]["groups"] == expected["groups"], (
        "deploy/k8s/base/prometheus-rule.yaml differs from "
        "monitoring/prometheus/rules/visionserve.yml; copy the groups over"
    )


def test_aws_overlay_syncs_models_from_s3() -> None:
    objects = overlay_objects("aws")
    kinds = {(item["kind"], item["metadata"]["name"]) for item in objects}
    assert ("PersistentVolumeClaim", "models") not in kinds
    assert ("Job", "models-init") not in kinds
    account = find_object(objects, "ServiceAccount", "model-sync")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    for kind, name in (
        ("Deployment", "classifier"),
        ("Deployment", "detector"),
        ("CronJob", "monitor"),
    ):
        spec = pod_spec(find_object(objects, kind, name))
        assert spec["serviceAccountName"] == "model-sync", name
        sync = spec["initContainers"][0]
        assert sync["command"][:3] == ["aws", "s3", "sync"], name
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert set(volumes["models"]) == {"name", "emptyDir"}, name


def test_aws_overlay_uses_ecr_images() -> None:
    for workload in workloads(overlay_objects("aws")):
        for container in containers(workload):
            image = container["image"]
            if image.startswith("visionserve/"):
                pytest.fail(f"{container['name']} uses the local image name {image}")


def test_aws_ingress_targets_gateway() -> None:
    ingress = find_object(overlay_objects("aws"), "Ingress", "gateway")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "gateway", "port": {"name": "http"}}


def test_eksctl_cluster_file() -> None:
    cluster = yaml.safe_load((K8S_DIR / "overlays" / "aws" / "eksctl-cluster.yaml").read_text())
    assert cluster["apiVersion"] == "eksctl.io/v1alpha5"
    assert cluster["kind"] == "ClusterConfig"
    assert cluster["iam"]["withOIDC"] is True
    accounts = {entry["metadata"]["name"]: entry for entry in cluster["iam"]["serviceAccounts"]}
    assert accounts["model-sync"]["metadata"]["namespace"] == "visionserve"
    role_arn = find_object(overlay_objects("aws"), "ServiceAccount", "model-sync")["metadata"][
        "annotations"
    ]["eks.amazonaws.com/role-arn"]
    assert role_arn.endswith(f":role/{accounts['model-sync']['roleName']}")
