"""Resource groups' pure parts: placeholder pods, the all-or-nothing plan, bundle choice, and
the driver's checks (no cluster here; tests/test_resource_groups_cluster.py runs them for real)."""

from __future__ import annotations

import pytest
from yr_operator.builders import build_pod
from yr_operator.groups import (
    ATTEMPT_LABEL,
    blocking_placeholders,
    build_placeholder_pod,
    choose_bundle,
    in_bundle,
    iso,
    plan_group,
    rejected_at_admission,
)

from yr.errors import YRSchedulingError
from yr.options import InvokeOptions, ResourceGroupOptions
from yr.runtime.base import Bundle, ClassInfo, InstanceSpec, ResourceGroupSpec
from yr.runtime.kubernetes.groups import build_resource_group, check_placement, never_admitted
from yr.runtime.kubernetes.objects import build_yrinstance

NOW = 1_000_000.0
BIND_S = 10.0
UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient cpu. preemption: ..."


def group(strategy: str = "PACK", count: int = 3, **status: object) -> dict:
    return {
        "apiVersion": "yr.dev/v1alpha1",
        "kind": "YRResourceGroup",
        "metadata": {"name": "team", "namespace": "ns", "uid": "g-uid", "resourceVersion": "7"},
        "spec": {
            "strategy": strategy,
            "session": "s1",
            "bundles": [{"cpu": 1000, "memory": 256}] * count,
        },
        "status": dict(status),
    }


def placeholder(bundle: int, attempt: int = 1, *, node: str = "", message: str = "") -> dict:
    pod = build_placeholder_pod(group(), bundle=bundle, attempt=attempt, image="img")
    if node:
        pod["spec"]["nodeName"] = node
    if message:
        pod["status"] = {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ]
        }
    return pod


def reserving(attempt: int = 1, started: float = NOW) -> dict:
    return {"phase": "Pending", "attempt": attempt, "attemptStarted": iso(started)}


# --- placeholder pods -------------------------------------------------------------------------


def test_placeholder_pod_requests_its_bundle_and_is_controlled_by_its_group():
    rg = group()
    rg["spec"]["bundles"][1] = {
        "cpu": 1500,
        "memory": 512,
        "customResources": [{"name": "nvidia.com/gpu", "quantity": 1}],
    }
    pod = build_placeholder_pod(rg, bundle=1, attempt=2, image="img")
    assert pod["metadata"]["name"] == "team-b1-a2"
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "1500m", "memory": "512Mi", "nvidia.com/gpu": "1"}
    assert resources["limits"] == {"nvidia.com/gpu": "1"}
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "YRResourceGroup",
        "team",
        "g-uid",
        True,
    )
    assert pod["metadata"]["labels"]["yr.dev/bundle"] == "1"
    assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("strategy", "kind", "when"),
    [
        ("PACK", "podAffinity", "preferredDuringSchedulingIgnoredDuringExecution"),
        ("STRICT_PACK", "podAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
        ("SPREAD", "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution"),
        ("STRICT_SPREAD", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
    ],
)
def test_strategy_sets_pod_affinity_on_hostname_between_the_attempts_placeholders(
    strategy, kind, when
):
    affinity = build_placeholder_pod(group(strategy), bundle=0, attempt=3)["spec"]["affinity"]
    assert list(affinity) == [kind]
    (term,) = affinity[kind][when]
    term = term.get("podAffinityTerm", term)
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {
        "yr.dev/resource-group": "team",
        ATTEMPT_LABEL: "3",
    }


def test_instance_pod_in_a_bundle_is_bound_to_the_bundle_node():
    yri = {
        "metadata": {"name": "w1", "namespace": "ns", "uid": "u"},
        "spec": {
            "className": "m.W",
            "cpu": 500,
            "memory": 64,
            "payloadSecret": "p",
            "session": "s",
        },
    }
    pod = in_bundle(build_pod(yri, incarnation=0, image="img"), group="team", bundle=2, node="n2")
    assert pod["spec"]["nodeName"] == "n2"
    assert pod["metadata"]["labels"]["yr.dev/resource-group"] == "team"
    assert pod["metadata"]["labels"]["yr.dev/bundle"] == "2"


# --- the plan ---------------------------------------------------------------------------------


def test_first_reconcile_creates_every_placeholder_of_attempt_one():
    p = plan_group(group(), [], now=NOW, bind_s=BIND_S)
    assert p.create == (0, 1, 2)
    assert (p.status["phase"], p.status["attempt"], p.status["total"]) == ("Pending", 1, 3)
    assert p.requeue_in == BIND_S


def test_group_is_not_admitted_while_a_placeholder_is_unbound():
    pods = [placeholder(0, node="n1"), placeholder(1, node="n1"), placeholder(2)]
    p = plan_group(group(**reserving()), pods, now=NOW + 1, bind_s=BIND_S)
    assert p.status["phase"] == "Pending"
    assert p.status["reserved"] == 2
    assert p.delete == () and p.create == ()


def test_group_is_admitted_when_every_placeholder_is_bound_and_records_their_nodes():
    pods = [placeholder(0, node="n1"), placeholder(1, node="n2"), placeholder(2, node="n1")]
    p = plan_group(group(**reserving()), pods, now=NOW + 1, bind_s=BIND_S)
    assert p.status["phase"] == "Admitted"
    assert [b["node"] for b in p.status["bundles"]] == ["n1", "n2", "n1"]
    assert p.status["reserved"] == 3


def test_partial_reservation_is_released_whole_after_the_bind_time_with_the_schedulers_words():
    pods = [placeholder(0, node="n1"), placeholder(1, message=UNSCHEDULABLE), placeholder(2)]
    p = plan_group(group(**reserving()), pods, now=NOW + BIND_S, bind_s=BIND_S, retry_base=2.0)
    assert sorted(p.delete) == ["team-b0-a1", "team-b1-a1", "team-b2-a1"]
    assert p.status["reason"] == "Unschedulable"
    assert "0/1 nodes are available: 1 Insufficient cpu" in p.status["message"]
    assert p.status["reserved"] == 0
    assert 1.0 <= p.requeue_in <= 2.0  # base 2 s with jitter


def test_released_group_retries_with_the_next_attempt_once_its_backoff_passed():
    status = {**reserving(), "retryAt": iso(NOW + 5)}
    waiting = plan_group(group(**status), [], now=NOW + 4, bind_s=BIND_S)
    assert waiting.create == () and waiting.requeue_in == pytest.approx(1.0)
    retry = plan_group(group(**status), [], now=NOW + 5, bind_s=BIND_S)
    assert retry.create == (0, 1, 2) and retry.status["attempt"] == 2


def test_a_released_group_retries_at_once_when_capacity_was_freed():
    status = {**reserving(), "retryAt": iso(NOW + 20)}
    retry = plan_group(group(**status), [], now=NOW + 1, bind_s=BIND_S, retry_now=True)
    assert retry.create == (0, 1, 2) and retry.status["attempt"] == 2


def test_placeholders_of_an_older_attempt_are_deleted():
    pods = [placeholder(0, attempt=1), placeholder(0, attempt=2)]
    p = plan_group(group(**reserving(attempt=2)), pods, now=NOW, bind_s=BIND_S)
    assert p.delete == ("team-b0-a1",)


def admitted_status(*nodes: str) -> dict:
    bundles = [{"node": node, "instance": f"w{i}"} for i, node in enumerate(nodes)]
    return {"phase": "Admitted", "attempt": 1, "bundles": bundles}


def test_an_admitted_group_reserves_a_lost_bundle_again_with_a_new_placeholder():
    p = plan_group(group(**admitted_status("n1", "")), [], now=NOW, bind_s=BIND_S)
    assert p.rebind == (1,) and p.create == ()
    assert build_placeholder_pod(group(), bundle=1, attempt=0)["metadata"]["name"] == "team-b1-a0"


def test_a_lost_bundle_gets_the_node_its_new_placeholder_was_bound_to():
    pods = [placeholder(1, attempt=0, node="n2"), placeholder(0, attempt=1, node="n1")]
    p = plan_group(group(**admitted_status("n1", "")), pods, now=NOW, bind_s=BIND_S)
    assert [b["node"] for b in p.status["bundles"]] == ["n1", "n2"]
    assert p.rebind == () and p.delete == ()


def test_a_bundle_of_an_admitted_group_whose_node_is_known_is_not_reserved_again():
    p = plan_group(group(**admitted_status("n1", "n2")), [], now=NOW, bind_s=BIND_S)
    assert p.rebind == () and p.create == ()


def created_at(pod: dict, when: float) -> dict:
    pod["metadata"]["creationTimestamp"] = iso(when)
    return pod


def test_a_takeover_waits_for_pending_placeholders_but_not_for_a_long_waiting_lost_bundle():
    pods = [
        created_at(placeholder(0, attempt=2), NOW - 100),  # a reservation attempt, pending
        created_at(placeholder(1, attempt=2, node="n1"), NOW - 100),  # bound: harmless
        created_at(placeholder(2, attempt=0), NOW - 1),  # a lost bundle, just placed again
        created_at(placeholder(1, attempt=0), NOW - 100),  # ... waiting for long
    ]
    assert blocking_placeholders(pods, now=NOW, bind_s=BIND_S) == ["team-b0-a2", "team-b2-a0"]


def test_any_bundle_index_picks_the_first_bundle_nobody_holds():
    bundles = [{"node": "n1", "instance": "a"}, {"node": "n1", "instance": ""}]
    assert choose_bundle(group(bundles=bundles), instance="b", index=-1) == 1
    assert choose_bundle(group(bundles=bundles), instance="a", index=-1) == 0  # its own again


def test_an_explicit_bundle_held_by_another_instance_is_refused_with_the_holder():
    bundles = [{"node": "n1", "instance": "a"}]
    why = choose_bundle(group(bundles=bundles), instance="b", index=0)
    assert isinstance(why, str) and "held by instance a" in why


def test_a_pod_the_kubelet_refused_for_lack_of_cpu_is_a_lost_race():
    pod = {"status": {"phase": "Failed", "reason": "OutOfcpu", "message": "Pod was rejected"}}
    assert rejected_at_admission(pod) == "OutOfcpu"
    assert rejected_at_admission({"status": {"phase": "Failed", "reason": "Evicted"}}) == ""


# --- the driver's side ------------------------------------------------------------------------


def spec_of(*cpus: int, strategy: str = "PACK") -> ResourceGroupSpec:
    return ResourceGroupSpec("team", tuple(Bundle(cpu=c, memory=128) for c in cpus), strategy)


NODE = {"CPU": 4000.0, "Memory": 8192.0}


def test_a_group_is_refused_when_a_bundle_is_larger_than_any_node():
    assert "bundle 1 (5000m CPU, 128 MB) is larger than any node" in never_admitted(
        spec_of(1000, 5000), [NODE, NODE]
    )


def test_a_group_is_refused_when_it_exceeds_the_whole_cluster():
    assert "more than the cluster's" in never_admitted(spec_of(3000, 3000), [NODE])


def test_strict_spread_needs_as_many_nodes_as_bundles():
    why = never_admitted(spec_of(1000, 1000, 1000, strategy="STRICT_SPREAD"), [NODE, NODE])
    assert "needs 3 distinct nodes, the cluster has 2" in why
    assert never_admitted(spec_of(1000, 1000, strategy="STRICT_SPREAD"), [NODE, NODE]) == ""


def test_strict_pack_needs_one_node_for_the_whole_group():
    assert "on one node" in never_admitted(spec_of(3000, 3000, strategy="STRICT_PACK"), [NODE] * 2)


def instance_spec(cpu: int, index: int) -> InstanceSpec:
    options = InvokeOptions(
        cpu=cpu,
        memory=128,
        resource_group_options=ResourceGroupOptions("team", bundle_index=index),
    )
    return InstanceSpec(ClassInfo("m.Worker", {}), b"", options)


def stored_group(*cpus: int) -> dict:
    return build_resource_group(spec=spec_of(*cpus), session="s1", owner={})


def test_placement_in_a_bundle_index_the_group_lacks_is_refused():
    with pytest.raises(ValueError, match="has 2 bundle\\(s\\) \\(0..1\\), no bundle_index 2"):
        check_placement(instance_spec(500, 2), stored_group(1000, 1000))


def test_placement_in_a_bundle_too_small_is_refused():
    with pytest.raises(YRSchedulingError, match="more than bundle 0 \\(1000m CPU, 128 MB\\)"):
        check_placement(instance_spec(2000, 0), stored_group(1000, 3000))
    check_placement(instance_spec(2000, -1), stored_group(1000, 3000))  # bundle 1 fits
    with pytest.raises(YRSchedulingError, match="more than every bundle"):
        check_placement(instance_spec(4000, -1), stored_group(1000, 3000))


def test_yrinstance_in_a_group_names_it_in_spec_and_label():
    body = build_yrinstance(name="w-1", session="s1", spec=instance_spec(500, 1), owner={})
    assert body["spec"]["resourceGroup"] == {"name": "team", "bundleIndex": 1}
    assert body["metadata"]["labels"]["yr.dev/resource-group"] == "team"
