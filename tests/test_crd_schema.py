"""The YRInstance CRD (crds/yrinstances.yaml): its names, printer columns and the admission
rules its openAPIV3Schema enforces, checked with jsonschema as the API server would."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

CRD_PATH = Path(__file__).resolve().parent.parent / "crds" / "yrinstances.yaml"

VALID_SPEC = {
    "className": "tree_training.Supervisor",
    "cpu": 500,
    "memory": 500,
    "payloadSecret": "yri-abc-payload",
    "session": "s1",
}


@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def version(crd) -> dict:
    (only,) = crd["spec"]["versions"]
    return only


@pytest.fixture(scope="module")
def validator(version) -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 schemas are a draft-4 dialect; the x-kubernetes-* keywords are ignored here.
    return jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])


def yrinstance(spec: dict | None = None, status: dict | None = None, **spec_changes) -> dict:
    body = copy.deepcopy(VALID_SPEC if spec is None else spec)
    body.update(spec_changes)
    obj = {
        "apiVersion": "yr.dev/v1alpha1",
        "kind": "YRInstance",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": body,
    }
    if status is not None:
        obj["status"] = status
    return obj


def errors(validator, obj) -> list[str]:
    return [e.message for e in validator.iter_errors(obj)]


def test_crd_names_resource_as_contract(crd):
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "yrinstances.yr.dev"
    assert crd["spec"]["group"] == "yr.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "YRInstance",
        "listKind": "YRInstanceList",
        "plural": "yrinstances",
        "singular": "yrinstance",
        "shortNames": ["yri"],
        "categories": ["yr"],
    }


def test_crd_serves_and_stores_v1alpha1_with_status_subresource(version):
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_status_cpu_owner_restarts_pod_age_and_wide_extras(version):
    columns = [
        (c["name"].upper(), c["jsonPath"], c.get("priority", 0))
        for c in version["additionalPrinterColumns"]
    ]
    assert columns == [
        ("STATUS", ".status.phase", 0),
        ("CPU(M)", ".spec.cpu", 0),
        ("OWNER", ".metadata.ownerReferences[0].name", 0),
        ("RESTARTS", ".status.restarts", 0),
        ("POD", ".status.podName", 0),
        ("AGE", ".metadata.creationTimestamp", 0),
        ("NODE", ".status.node", 1),
        ("IP", ".status.podIP", 1),
        ("REASON", ".status.reason", 1),
        ("ROOT", ".metadata.labels.yr\\.dev/root", 1),
    ]


def test_schema_accepts_minimal_valid_instance(validator):
    assert errors(validator, yrinstance()) == []


def test_schema_accepts_every_optional_spec_field(validator):
    obj = yrinstance(
        image="yr:dev",
        concurrency=4,
        maxRestarts=3,
        instanceName="ps",
        instanceNamespace="training",
        envVars={"OMP_NUM_THREADS": "1"},
        podLabels={"team": "ml"},
    )
    assert errors(validator, obj) == []


@pytest.mark.parametrize("cpu", [0, -5, "abc", "500m", 1.5, 1_000_001])
def test_schema_rejects_invalid_cpu(validator, cpu):
    assert errors(validator, yrinstance(cpu=cpu)) != []


def test_schema_rejects_missing_cpu(validator):
    spec = {k: v for k, v in VALID_SPEC.items() if k != "cpu"}
    assert errors(validator, yrinstance(spec)) == ["'cpu' is a required property"]


@pytest.mark.parametrize("cpu", [1, 500, 1_000_000])
def test_schema_accepts_cpu_within_bounds(validator, cpu):
    assert errors(validator, yrinstance(cpu=cpu)) == []


@pytest.mark.parametrize("field", ["className", "cpu", "memory", "payloadSecret", "session"])
def test_schema_requires_contract_spec_fields(validator, field):
    spec = {k: v for k, v in VALID_SPEC.items() if k != field}
    assert errors(validator, yrinstance(spec)) == [f"'{field}' is a required property"]


def test_schema_requires_spec(validator):
    obj = yrinstance()
    del obj["spec"]
    assert errors(validator, obj) == ["'spec' is a required property"]


@pytest.mark.parametrize(
    "change",
    [
        {"memory": 0},
        {"memory": "500Mi"},
        {"concurrency": 0},
        {"maxRestarts": -1},
        {"payloadSecret": ""},
        {"envVars": {"N": 1}},
        {"podLabels": {"a": True}},
    ],
    ids=lambda change: "-".join(f"{k}={v!r}" for k, v in change.items()),
)
def test_schema_rejects_invalid_optional_or_bounded_fields(validator, change):
    assert errors(validator, yrinstance(**change)) != []


def test_schema_defaults_concurrency_to_1_and_max_restarts_to_0(version):
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["concurrency"]["default"] == 1
    assert spec["maxRestarts"]["default"] == 0


def test_schema_accepts_status_as_the_operator_writes_it(validator):
    status = {
        "phase": "Pending",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu.",
        "podName": "x-0",
        "podIP": "10.244.0.7",
        "port": 50051,
        "node": "yr-control-plane",
        "restarts": 0,
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient cpu.",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        ],
    }
    assert errors(validator, yrinstance(status=status)) == []


def test_schema_rejects_unknown_phase(validator):
    assert errors(validator, yrinstance(status={"phase": "Done"})) != []


def walk(schema: dict, path: str = ""):
    """Yield (path, node) for every schema node under properties, items, additionalProperties."""
    yield path or "/", schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}/{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural_every_node_has_a_type(version):
    # The API server rejects a v1 CRD whose schema is not structural; the first rule is that
    # every node names its type.
    untyped = [p for p, node in walk(version["schema"]["openAPIV3Schema"]) if "type" not in node]
    assert untyped == []


def test_schema_preserves_unknown_fields_only_for_kopf_status(version):
    preserving = [
        p
        for p, node in walk(version["schema"]["openAPIV3Schema"])
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserving == ["/status/kopf"]


# --- pod labels and concurrency: rejected at admission, as the SDK and the pod would ---------


def pod_labels_schema(version) -> dict:
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["podLabels"]


@pytest.fixture(scope="module")
def pod_label_key_rule(version):
    """The CEL rule on podLabels, compiled by a CEL implementation (the emulated API server
    does not evaluate CEL): `rule(labels)` is True when the API server would admit them."""
    import celpy

    (validation,) = pod_labels_schema(version)["x-kubernetes-validations"]
    env = celpy.Environment()
    program = env.program(env.compile(validation["rule"]))
    return lambda labels: bool(program.evaluate({"self": celpy.json_to_cel(labels)}))


VALID_LABEL_KEYS = ["team", "app.kubernetes.io/name", "example.com/Tier_2", "a", "x" * 63]
INVALID_LABEL_KEYS = [
    "",
    "bad key",
    "-leading-dash",
    "trailing.",
    "x" * 64,
    "a/b/c",
    "UPPER.example.com/name",
    "/name",
    "example.com/",
    "p" * 254 + "/name",
]


@pytest.mark.parametrize("key", VALID_LABEL_KEYS)
def test_pod_label_rule_admits_valid_label_keys(pod_label_key_rule, key):
    assert pod_label_key_rule({key: "v"})


@pytest.mark.parametrize("key", INVALID_LABEL_KEYS, ids=lambda k: repr(k[:20]))
def test_pod_label_rule_rejects_invalid_label_keys(pod_label_key_rule, key):
    assert not pod_label_key_rule({"team": "a", key: "v"})


@pytest.mark.parametrize("value", ["", "ml", "A-b_c.9", "x" * 63])
def test_schema_admits_valid_pod_label_values(validator, value):
    assert errors(validator, yrinstance(podLabels={"team": value})) == []


@pytest.mark.parametrize("value", ["x" * 64, "has space", "-dash", "dot.", "a/b", "é"])
def test_schema_rejects_invalid_pod_label_values(validator, value):
    assert errors(validator, yrinstance(podLabels={"team": value})) != []


def test_pod_labels_are_bounded_so_the_rule_fits_the_api_servers_cost_budget(version, validator):
    # An unbounded map makes the API server estimate the CEL rule's cost as too high and
    # refuse the whole CRD.
    assert pod_labels_schema(version)["maxProperties"] == 128
    too_many = {f"l{i}": "v" for i in range(129)}
    assert errors(validator, yrinstance(podLabels=too_many)) != []


def test_schema_caps_concurrency_where_the_sdk_does(validator):
    from yr.options import InvokeOptions

    InvokeOptions(concurrency=10_000)
    with pytest.raises(ValueError):
        InvokeOptions(concurrency=10_001)
    assert errors(validator, yrinstance(concurrency=10_000)) == []
    assert errors(validator, yrinstance(concurrency=10_001)) != []


def test_instance_names_too_long_for_a_pod_name_are_rejected(version):
    import celpy

    (validation,) = version["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    env = celpy.Environment()
    program = env.program(env.compile(validation["rule"]))

    def admitted(name: str) -> bool:
        obj = yrinstance()
        obj["metadata"]["name"] = name
        return bool(program.evaluate({"self": celpy.json_to_cel(obj)}))

    assert admitted("w" * 240)
    assert not admitted("w" * 241)
    # The longest admitted name still leaves room for the pod's -<incarnation> suffix.
    assert len(f"{'w' * 240}-{10**11 - 1}") <= 253


def test_custom_resources_take_extended_resource_names_and_whole_counts(validator):
    good = yrinstance(customResources=[{"name": "nvidia.com/gpu", "quantity": 1}])
    assert errors(validator, good) == []
    for bad in (
        [{"name": "gpu", "quantity": 1}],
        [{"name": "nvidia.com/gpu", "quantity": -1}],
        [{"name": "nvidia.com/gpu", "quantity": 0.5}],
        [{"name": "nvidia.com/gpu"}],
    ):
        assert errors(validator, yrinstance(customResources=bad)), bad
