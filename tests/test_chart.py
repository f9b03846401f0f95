"""The Helm chart (charts/yr), rendered with the real helm binary: lint, Kubernetes schema
validation, exact least-privilege RBAC, hardened pods, the operator and gateway wiring, and the
packaging files around it (CRD copy, Dockerfile, kind-config.yaml).

helm and kubectl are the ones on PATH (`.ci/install-k8s-tools` installs the pinned ones into
.tools/bin, `.ci/run` puts that on PATH); without them the run stops with one message.
"""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.cluster.tools import K8sTools

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "yr"
# The Kubernetes version manifests are validated against: the kubectl we ship is v1.34.
KUBERNETES_VERSION = "1.34.0"
RELEASE, NAMESPACE = "yr", "yr-system"
INSTALLER, INSTALLED = REPO / ".ci" / "install-k8s-tools", REPO / ".tools" / "bin"

# Value sets every structural check runs over: the default install and the non-default shapes.
VARIANTS = {
    "default": [],
    "watch-namespaces": ["--set", "watchNamespaces={a,b}"],
    "no-gateway": ["--set", "gateway.enabled=false"],
    "no-networkpolicy-no-sa": [
        "--set",
        "networkPolicy.enabled=false",
        "--set",
        "instance.serviceAccount.create=false",
    ],
}


@pytest.fixture(scope="session")
def tools(k8s_tools: K8sTools) -> K8sTools:
    return k8s_tools


def run(*argv: str | Path) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{shlex.join(map(str, argv))}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@functools.cache
def _render(helm: Path, args: tuple[str, ...]) -> tuple[str, list[dict]]:
    text = run(helm, "template", RELEASE, CHART, "--namespace", NAMESPACE, "--include-crds", *args)
    return text, [doc for doc in yaml.safe_load_all(text) if doc]


def render(tools: K8sTools, *args: str) -> list[dict]:
    return _render(tools / "helm", args)[1]


def rendered_text(tools: K8sTools, *args: str) -> str:
    return _render(tools / "helm", args)[0]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    (found,) = [
        d
        for d in of_kind(docs, kind)
        if d["metadata"]["name"] == name
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    return found


def rule_set(role: dict) -> set[tuple[str, str, str]]:
    """A role's rules flattened to (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def grants(groups_resources: dict[tuple[str, str], str]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for (g, r), verbs in groups_resources.items() for v in verbs.split()}


OPERATOR_NAMESPACED = grants(
    {
        ("yr.dev", "yrinstances"): "get list watch patch update delete",
        ("yr.dev", "yrinstances/status"): "get patch update",
        ("yr.dev", "yrinstances/finalizers"): "update",
        ("yr.dev", "yrresourcegroups"): "get list watch patch update",
        ("yr.dev", "yrresourcegroups/status"): "get patch update",
        ("yr.dev", "yrresourcegroups/finalizers"): "update",
        ("", "pods"): "get list watch create delete",
        ("", "pods/log"): "get",
        ("", "secrets"): "patch",
        ("coordination.k8s.io", "leases"): "get list watch delete",
        ("", "events"): "create patch list",
        ("events.k8s.io", "events"): "create patch",
    }
)
OPERATOR_DISCOVERY = grants(
    {
        ("apiextensions.k8s.io", "customresourcedefinitions"): "get list watch",
        ("", "namespaces"): "get list watch",
    }
)
INSTANCE = grants(
    {
        ("yr.dev", "yrinstances"): "create list watch delete",
        ("yr.dev", "yrresourcegroups"): "create get list watch delete",
        ("", "secrets"): "create",
    }
)
# Secrets: get only, to check a caller's token against its session's yr-session-* Secret.
GATEWAY = grants({("yr.dev", "yrinstances"): "get list watch", ("", "secrets"): "get"})


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in of_kind(docs, "Deployment")
    }


# --- tools and lint -------------------------------------------------------------------------


def test_installer_provides_pinned_helm_and_kubectl(tools):
    assert run(INSTALLER).strip() == str(INSTALLED)  # idempotent: a second run is a no-op
    assert run(tools / "helm", "version", "--template", "{{.Version}}") == "v3.19.0"
    assert "v1.34.5" in run(tools / "kubectl", "version", "--client")


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_is_clean(tools, variant):
    run(tools / "helm", "lint", "--strict", CHART, *VARIANTS[variant])


def _lint_refusal(tools, setting: str) -> str:
    """What ``helm lint`` says when the values schema refuses ``setting`` (asserts it does)."""
    done = subprocess.run(
        [tools / "helm", "lint", CHART, "--set", setting],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, f"helm lint accepted {setting}"
    return done.stdout + done.stderr


def test_values_schema_rejects_node_port_outside_range(tools):
    assert "nodePort" in _lint_refusal(tools, "gateway.service.nodePort=80")


# --- schema validity ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_validate_against_kubernetes_schemas(tools, variant):
    for doc in render(tools, *VARIANTS[variant]):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubectl_parses_rendered_chart_offline(tools, tmp_path):
    manifest = tmp_path / "chart.yaml"
    manifest.write_text(rendered_text(tools))
    # `label --local` decodes every object without a server (apply --dry-run=client needs one).
    names = run(
        tools / "kubectl", "label", "--local", "-f", manifest, "yr.dev/check=ok", "-o", "name"
    ).split()
    assert len(names) == len(render(tools))


@pytest.mark.parametrize("crd", ["yrinstances.yaml", "yrresourcegroups.yaml"])
def test_chart_crd_is_exact_copy_of_crds_dir(crd):
    assert (CHART / "crds" / crd).read_bytes() == (REPO / "crds" / crd).read_bytes(), (
        f"run: cp crds/{crd} charts/yr/crds/{crd}"
    )


def test_chart_renders_the_crds(tools):
    crds = of_kind(render(tools), "CustomResourceDefinition")
    assert {crd["metadata"]["name"] for crd in crds} == {
        "yrinstances.yr.dev",
        "yrresourcegroups.yr.dev",
    }


# --- RBAC -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_uses_no_wildcards(tools, variant):
    docs = render(tools, *VARIANTS[variant])
    for role in of_kind(docs, "Role") + of_kind(docs, "ClusterRole"):
        for group, resource, verb in rule_set(role):
            assert "*" not in (group, resource, verb), role["metadata"]["name"]
        assert all("nonResourceURLs" not in rule for rule in role["rules"])


def test_operator_watching_all_namespaces_gets_exact_cluster_roles(tools):
    docs = render(tools)
    assert rule_set(one(docs, "ClusterRole", "yr-operator")) == OPERATOR_NAMESPACED
    assert rule_set(one(docs, "ClusterRole", "yr-operator-discovery")) == OPERATOR_DISCOVERY
    assert {d["metadata"]["name"] for d in of_kind(docs, "ClusterRole")} == {
        "yr-operator",
        "yr-operator-discovery",
    }


def test_operator_watching_listed_namespaces_gets_a_role_in_each(tools):
    docs = render(tools, *VARIANTS["watch-namespaces"])
    for ns in ("a", "b"):
        assert rule_set(one(docs, "Role", "yr-operator", ns)) == OPERATOR_NAMESPACED
    # Only kopf's discovery reads stay cluster-wide.
    (cluster_role,) = of_kind(docs, "ClusterRole")
    assert rule_set(cluster_role) == OPERATOR_DISCOVERY


def test_instance_role_allows_only_yrinstances_and_secrets_in_its_namespace(tools):
    docs = render(tools)
    assert rule_set(one(docs, "Role", "yr-instance", NAMESPACE)) == INSTANCE


@pytest.mark.parametrize("variant", VARIANTS)
def test_instance_role_cannot_read_any_secret(tools, variant):
    # User code in a pod holds these credentials: a readable Secret would expose the Helm
    # release, every payload and other sessions' tokens.
    roles = [d for d in of_kind(render(tools, *VARIANTS[variant]), "Role")]
    instance_roles = [r for r in roles if r["metadata"]["name"] == "yr-instance"]
    assert instance_roles
    for role in instance_roles:
        secret_verbs = {v for g, r, v in rule_set(role) if (g, r) == ("", "secrets")}
        assert secret_verbs == {"create"}, role["metadata"]["namespace"]


def test_instance_rbac_follows_watched_namespaces(tools):
    docs = render(tools, *VARIANTS["watch-namespaces"])
    roles = [d for d in of_kind(docs, "Role") if d["metadata"]["name"] == "yr-instance"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    assert all(rule_set(r) == INSTANCE for r in roles)


def test_gateway_role_reads_yrinstances_and_gets_session_secrets(tools):
    assert rule_set(one(render(tools), "Role", "yr-gateway", NAMESPACE)) == GATEWAY


def bindings(docs: list[dict]) -> set[tuple[str, str | None, str, str, str]]:
    """(binding kind, binding namespace, role kind, role name, subject) for every binding."""
    return {
        (
            b["kind"],
            b["metadata"].get("namespace"),
            b["roleRef"]["kind"],
            b["roleRef"]["name"],
            f"{s['kind']}:{s.get('namespace')}/{s['name']}",
        )
        for b in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding")
        for s in b["subjects"]
    }


def test_each_service_account_is_bound_only_to_its_own_role(tools):
    operator, instance, gateway = (
        f"ServiceAccount:{NAMESPACE}/yr-operator",
        f"ServiceAccount:{NAMESPACE}/yr-instance",
        f"ServiceAccount:{NAMESPACE}/yr-gateway",
    )
    assert bindings(render(tools)) == {
        ("ClusterRoleBinding", None, "ClusterRole", "yr-operator", operator),
        ("ClusterRoleBinding", None, "ClusterRole", "yr-operator-discovery", operator),
        ("RoleBinding", NAMESPACE, "Role", "yr-instance", instance),
        ("RoleBinding", NAMESPACE, "Role", "yr-gateway", gateway),
    }


def test_instance_service_account_has_no_cluster_wide_binding(tools):
    for variant in VARIANTS.values():
        for kind, _, _, _, subject in bindings(render(tools, *variant)):
            assert not (kind == "ClusterRoleBinding" and subject.endswith("/yr-instance"))


# --- pods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_runs_non_root_read_only_without_privilege_escalation(tools, variant):
    templates = pod_templates(render(tools, *VARIANTS[variant]))
    assert templates
    for name, pod in templates.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, name
            assert sc["runAsUser"] == 10001, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name


def operator_container(docs: list[dict]) -> dict:
    (container,) = one(docs, "Deployment", "yr-operator")["spec"]["template"]["spec"]["containers"]
    return container


def test_operator_runs_single_replica_with_recreate_strategy(tools):
    spec = one(render(tools), "Deployment", "yr-operator")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_operator_watches_all_namespaces_by_default(tools):
    container = operator_container(render(tools))
    assert container["command"] == ["yr-operator"]
    assert container["args"][:3] == ["-A", "--liveness", "http://0.0.0.0:8080/healthz"]


def test_operator_watches_each_listed_namespace(tools):
    container = operator_container(render(tools, *VARIANTS["watch-namespaces"]))
    assert container["args"][:6] == [
        "-n",
        "a",
        "-n",
        "b",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
    ]


def test_operator_liveness_probe_polls_kopf_healthz(tools):
    container = operator_container(render(tools))
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in container["ports"]


def test_operator_serves_metrics_on_a_named_port_with_scrape_annotations(tools):
    docs = render(tools)
    container = operator_container(docs)
    assert container["args"][-2:] == ["--metrics", "0.0.0.0:9090"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    annotations = one(docs, "Deployment", "yr-operator")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
    }


def test_operator_metrics_service_selects_the_operator_pod(tools):
    docs = render(tools)
    service = one(docs, "Service", "yr-operator-metrics", NAMESPACE)
    pod_labels = one(docs, "Deployment", "yr-operator")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_service_monitor_is_off_by_default(tools):
    assert of_kind(render(tools), "ServiceMonitor") == []


def test_service_monitor_scrapes_the_metrics_service_when_enabled(tools):
    docs = render(tools, "--set", "operator.metrics.serviceMonitor.enabled=true")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    service = one(docs, "Service", "yr-operator-metrics", NAMESPACE)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]


def test_metrics_disabled_renders_no_port_service_or_annotations(tools):
    docs = render(tools, "--set", "operator.metrics.enabled=false")
    container = operator_container(docs)
    assert "--metrics" not in container["args"]
    assert all(port["name"] != "metrics" for port in container["ports"])
    assert all(doc["metadata"]["name"] != "yr-operator-metrics" for doc in docs)
    assert (
        "annotations" not in one(docs, "Deployment", "yr-operator")["spec"]["template"]["metadata"]
    )


def operator_env(docs: list[dict]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in operator_container(docs)["env"]}


def test_operator_env_names_chart_image_and_yr_instance_service_account(tools):
    assert operator_env(render(tools)) == {
        "YR_INSTANCE_IMAGE": "yr:0.1.0",
        "YR_INSTANCE_SERVICE_ACCOUNT": "yr-instance",
        "YR_INSTANCE_IMAGE_PULL_POLICY": "IfNotPresent",
        "YR_RESOURCE_GROUP_BIND_SECONDS": "10",
        "YR_RESOURCE_GROUP_RETRY_SECONDS": "1",
        "YR_LEASE_GRACE_SECONDS": "10",
    }


def test_operator_env_follows_image_tag_and_instance_values(tools):
    docs = render(
        tools,
        "--set",
        "image.tag=dev",
        "--set",
        "instance.serviceAccount.name=workers",
    )
    assert operator_env(docs) == {
        "YR_INSTANCE_IMAGE": "yr:dev",
        "YR_INSTANCE_SERVICE_ACCOUNT": "workers",
        "YR_INSTANCE_IMAGE_PULL_POLICY": "IfNotPresent",
        "YR_RESOURCE_GROUP_BIND_SECONDS": "10",
        "YR_RESOURCE_GROUP_RETRY_SECONDS": "1",
        "YR_LEASE_GRACE_SECONDS": "10",
    }
    docs = render(tools, "--set", "instance.image=registry.example/yr-gpu:1")
    assert operator_env(docs)["YR_INSTANCE_IMAGE"] == "registry.example/yr-gpu:1"


def test_operator_hands_the_charts_pull_policy_and_pull_secrets_to_instance_pods(tools):
    docs = render(
        tools,
        "--set",
        "image.pullPolicy=Always",
        "--set",
        "imagePullSecrets[0].name=regcred",
        "--set",
        "imagePullSecrets[1].name=mirror",
    )
    env = operator_env(docs)
    assert env["YR_INSTANCE_IMAGE_PULL_POLICY"] == "Always"
    assert env["YR_INSTANCE_IMAGE_PULL_SECRETS"] == "regcred,mirror"


def test_operator_gets_the_resource_group_bind_and_retry_times_from_values(tools):
    docs = render(
        tools,
        "--set",
        "operator.resourceGroups.bindSeconds=120",
        "--set",
        "operator.resourceGroups.retrySeconds=3",
    )
    env = operator_env(docs)
    assert (env["YR_RESOURCE_GROUP_BIND_SECONDS"], env["YR_RESOURCE_GROUP_RETRY_SECONDS"]) == (
        "120",
        "3",
    )


def test_operator_gets_the_driver_lease_grace_from_values(tools):
    env = operator_env(render(tools, "--set", "operator.leaseGraceSeconds=30"))
    assert env["YR_LEASE_GRACE_SECONDS"] == "30"


def test_values_schema_rejects_a_negative_lease_grace(tools):
    assert "leaseGraceSeconds" in _lint_refusal(tools, "operator.leaseGraceSeconds=-1")


def test_operator_uses_its_own_service_account(tools):
    pod = pod_templates(render(tools))["yr-operator"]
    assert pod["serviceAccountName"] == "yr-operator"


# --- gateway --------------------------------------------------------------------------------


def test_gateway_runs_yr_gateway_on_port_50052_for_its_namespace(tools):
    pod = pod_templates(render(tools))["yr-gateway"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "yr.gateway"]
    env = {e["name"]: e for e in container["env"]}
    assert env["YR_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["YR_GATEWAY_PORT"]["value"] == "50052"
    assert container["ports"] == [{"name": "grpc", "containerPort": 50052, "protocol": "TCP"}]
    assert pod["serviceAccountName"] == "yr-gateway"


def test_gateway_serves_tls_with_the_key_pair_of_the_yr_gateway_tls_secret(tools):
    pod = pod_templates(render(tools))["yr-gateway"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["YR_GATEWAY_TLS_CERT_FILE"] == "/var/run/yr/gateway-tls/tls.crt"
    assert env["YR_GATEWAY_TLS_KEY_FILE"] == "/var/run/yr/gateway-tls/tls.key"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["tls"] == {
        "name": "tls",
        "mountPath": "/var/run/yr/gateway-tls",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"] == {"secretName": "yr-gateway-tls", "defaultMode": 0o440}


def test_chart_makes_a_self_signed_gateway_certificate_for_the_name_yr_gateway(tools):
    import base64

    from cryptography import x509

    secret = one(render(tools), "Secret", "yr-gateway-tls", NAMESPACE)
    assert secret["type"] == "kubernetes.io/tls"
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["yr-gateway"]
    assert certificate.issuer == certificate.subject  # self-signed: drivers pin it
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN")


def test_gateway_service_exposes_node_port_30051(tools):
    service = one(render(tools), "Service", "yr-gateway")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [
        {"name": "grpc", "port": 50052, "targetPort": "grpc", "protocol": "TCP", "nodePort": 30051}
    ]


def test_gateway_node_port_is_configurable(tools):
    service = one(render(tools, "--set", "gateway.service.nodePort=31000"), "Service", "yr-gateway")
    assert service["spec"]["ports"][0]["nodePort"] == 31000


def test_gateway_disabled_renders_no_gateway_objects(tools):
    docs = render(tools, *VARIANTS["no-gateway"])
    assert [d for d in docs if "gateway" in d["metadata"]["name"]] == []


# --- network policy -------------------------------------------------------------------------


def test_network_policy_admits_only_instances_and_gateway_to_grpc_port(tools):
    policy = one(render(tools), "NetworkPolicy", "yr-instance", NAMESPACE)["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "yr-instance"}}
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 50051}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "yr-instance"}}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "yr",
                    "app.kubernetes.io/instance": RELEASE,
                    "app.kubernetes.io/component": "gateway",
                }
            },
        },
    ]


def test_network_policy_gateway_peer_matches_gateway_pods(tools):
    docs = render(tools)
    policy = one(docs, "NetworkPolicy", "yr-instance", NAMESPACE)["spec"]
    wanted = policy["ingress"][0]["from"][1]["podSelector"]["matchLabels"]
    labels = one(docs, "Deployment", "yr-gateway")["spec"]["template"]["metadata"]["labels"]
    assert wanted.items() <= labels.items()


def test_network_policy_without_gateway_admits_only_instances(tools):
    policy = one(render(tools, *VARIANTS["no-gateway"]), "NetworkPolicy", "yr-instance")
    assert policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "yr-instance"}}}
    ]


# --- packaging files ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    return [(entry.split(None, 1)[0].upper(), entry.split(None, 1)[1]) for entry in logical]


def test_dockerfile_final_stage_is_slim_non_root_and_runs_instance_server():
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    final = instructions[last_from:]
    assert final[0] == ("FROM", "${BASE_IMAGE}")
    users = [arg for op, arg in final if op == "USER"]
    assert users == ["10001:10001"]
    # Nothing after USER switches back to root, and CMD comes after USER.
    ops = [op for op, _ in final]
    assert ops.index("CMD") > ops.index("USER")
    assert final[-1] == ("CMD", '["python", "-m", "yr.server"]')


def test_dockerfile_base_image_is_a_build_argument_defaulting_to_python_slim():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert [arg for op, arg in instructions if op == "FROM"] == [
        "${BASE_IMAGE} AS build",
        "${BASE_IMAGE}",
    ]


def test_dockerfile_has_no_syntax_directive():
    # `# syntax=...` makes BuildKit pull a frontend image: offline builds would fail.
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not line[1:].strip().lower().startswith("syntax="), line


def test_dockerfile_installs_project_with_pip():
    runs = " ".join(arg for op, arg in dockerfile_instructions() if op == "RUN")
    # The image runs the operator, the gateway and collective members too: their extras, not
    # just the local runtime.
    assert 'pip install ".[kubernetes,operator,collective]"' in runs


def kind_config() -> dict:
    return yaml.safe_load((REPO / "kind-config.yaml").read_text())


def test_kind_config_maps_gateway_node_port_to_host_loopback():
    config = kind_config()
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (node,) = config["nodes"]
    assert node["role"] == "control-plane"
    assert node["extraPortMappings"] == [
        {"containerPort": 30051, "hostPort": 30051, "listenAddress": "127.0.0.1", "protocol": "TCP"}
    ]


def test_kind_config_maps_the_charts_default_node_port():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (mapping,) = kind_config()["nodes"][0]["extraPortMappings"]
    assert mapping["containerPort"] == values["gateway"]["service"]["nodePort"]


def render_notes(tools: K8sTools, tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` would print it. `helm template` skips NOTES and
    `helm install --dry-run` needs a cluster, so render it through `tpl` in a chart copy."""
    chart = tmp_path / "yr"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
    )
    out = run(
        tools / "helm",
        "template",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--show-only",
        "templates/notes.yaml",
        *args,
    )
    return yaml.safe_load(out)["notes"]


def test_notes_tell_how_to_run_the_example_through_the_gateway(tools, tmp_path):
    notes = render_notes(tools, tmp_path)
    assert (
        f"YR_BACKEND=kubernetes YR_NAMESPACE={NAMESPACE} YR_GATEWAY=127.0.0.1:30051 "
        "python examples/tree_training.py" in notes
    )
    assert "kubectl get yrinstances" in notes


def test_notes_without_gateway_run_the_example_in_a_watched_namespace(tools, tmp_path):
    notes = render_notes(
        tools, tmp_path, "--set", "gateway.enabled=false", "--set", "watchNamespaces={a,b}"
    )
    assert "YR_BACKEND=kubernetes YR_NAMESPACE=a python examples/tree_training.py" in notes
    assert "YR_GATEWAY" not in notes
