"""Unit tests of the operator's pure parts: the Pod builder, status mapping and decisions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from yr_operator.builders import build_pod, incarnation_of, instance_label_value, pod_name
from yr_operator.plan import backoff_seconds, plan
from yr_operator.status import build_status, observe_pod, status_changed, status_patch

NOW = "2025-01-01T00:00:00Z"
REPO = Path(__file__).resolve().parents[1]


def yri(**spec_overrides: object) -> dict:
    spec = {
        "className": "mod.Worker",
        "cpu": 250,
        "memory": 128,
        "payloadSecret": "w1-payload",
        "session": "s1",
        "maxRestarts": 0,
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "yr.dev/v1alpha1",
        "kind": "YRInstance",
        "metadata": {"name": "w1", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }


def container(pod: dict) -> dict:
    return pod["spec"]["containers"][0]


def env_of(pod: dict) -> dict:
    return {e["name"]: e for e in container(pod)["env"]}


# --- build_pod ---------------------------------------------------------------------------


def test_pod_name_is_instance_name_and_incarnation() -> None:
    pod = build_pod(yri(), incarnation=3, image="img", service_account="sa")
    assert pod["metadata"]["name"] == "w1-3" == pod_name("w1", 3)
    assert incarnation_of(pod) == 3


def test_pod_requests_cpu_in_millicores_and_memory_in_mebibytes() -> None:
    pod = build_pod(yri(), incarnation=0, image="img", service_account="sa")
    assert container(pod)["resources"]["requests"] == {"cpu": "250m", "memory": "128Mi"}


def test_pod_never_restarts_in_place() -> None:
    pod = build_pod(yri(), incarnation=0, image="img", service_account="sa")
    assert pod["spec"]["restartPolicy"] == "Never"


def test_pod_readiness_probe_is_grpc_on_the_plaintext_health_port_50053() -> None:
    # The kubelet's gRPC probe cannot speak TLS, and 50051 serves TLS only.
    c = container(build_pod(yri(), incarnation=0, image="img", service_account="sa"))
    assert c["readinessProbe"]["grpc"] == {"port": 50053}
    assert c["readinessProbe"]["periodSeconds"] == 1
    assert c["ports"] == [
        {"name": "grpc", "containerPort": 50051, "protocol": "TCP"},
        {"name": "health", "containerPort": 50053, "protocol": "TCP"},
    ]
    assert c["command"] == ["python", "-m", "yr.server"]


def test_readiness_probe_waits_a_second_so_a_normal_start_passes_its_first_probe() -> None:
    c = container(build_pod(yri(), incarnation=0, image="img", service_account="sa"))
    assert c["readinessProbe"]["initialDelaySeconds"] == 1


def test_pod_is_controlled_by_its_yrinstance() -> None:
    pod = build_pod(yri(), incarnation=0, image="img", service_account="sa")
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "yr.dev/v1alpha1",
            "kind": "YRInstance",
            "name": "w1",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_pod_mounts_the_payload_secret_read_only() -> None:
    pod = build_pod(yri(), incarnation=0, image="img", service_account="sa")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["payload"]["secret"]["secretName"] == "w1-payload"
    mounts = {m["name"]: m for m in container(pod)["volumeMounts"]}
    assert mounts["payload"] == {
        "name": "payload",
        "mountPath": "/var/run/yr/payload",
        "readOnly": True,
    }
    assert env_of(pod)["YR_PAYLOAD_FILE"]["value"] == "/var/run/yr/payload/payload"


def test_pod_env_names_the_root_of_its_tree() -> None:
    body = yri()
    body["metadata"].setdefault("labels", {})["yr.dev/root"] = "top-1"
    env = env_of(build_pod(body, incarnation=0, image="img", service_account="sa"))
    assert env["YR_ROOT"]["value"] == "top-1"


def test_pod_mounts_only_the_session_key_pair_from_the_session_secret() -> None:
    # Mounted by the kubelet: the instance's Role never needs to read Secrets. Optional: a
    # teardown that deletes the Secret before the pods must not make the kubelet warn.
    pod = build_pod(yri(), incarnation=0, image="img", service_account="sa")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["session-tls"]["secret"] == {
        "secretName": "yr-session-s1",
        "optional": True,
        "defaultMode": 0o440,
        "items": [
            {"key": "tls.crt", "path": "tls.crt"},
            {"key": "tls.key", "path": "tls.key"},
        ],
    }
    mounts = {m["name"]: m for m in container(pod)["volumeMounts"]}
    assert mounts["session-tls"] == {
        "name": "session-tls",
        "mountPath": "/var/run/yr/tls",
        "readOnly": True,
    }


def test_pod_env_follows_the_contract() -> None:
    env = env_of(build_pod(yri(concurrency=4), incarnation=0, image="img", service_account="sa"))
    values = {k: v.get("value") for k, v in env.items() if "value" in v}
    assert values == {
        "YR_BACKEND": "kubernetes",
        "YR_INSTANCE_NAME": "w1",
        "YR_ROOT": "w1",  # no root label: a top-level instance is its own root
        "YR_CLASS_NAME": "mod.Worker",
        "YR_SESSION": "s1",
        "YR_CONCURRENCY": "4",
        "YR_PORT": "50051",
        "YR_PAYLOAD_FILE": "/var/run/yr/payload/payload",
        "YR_TLS_CERT_FILE": "/var/run/yr/tls/tls.crt",
        "YR_TLS_KEY_FILE": "/var/run/yr/tls/tls.key",
        "YR_HEALTH_PORT": "50053",
    }
    fields = {
        k: v["valueFrom"]["fieldRef"]["fieldPath"]
        for k, v in env.items()
        if "valueFrom" in v and "fieldRef" in v["valueFrom"]
    }
    assert fields == {
        "YR_NAMESPACE": "metadata.namespace",
        "YR_POD_NAME": "metadata.name",
        "YR_POD_UID": "metadata.uid",
        "YR_POD_IP": "status.podIP",
        "YR_INCARNATION": "metadata.annotations['yr.dev/incarnation']",
    }
    assert env["YR_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "yr-session-s1",
        "key": "token",
    }


def test_user_env_vars_are_added_but_cannot_override_the_contract() -> None:
    spec = {"envVars": {"FOO": "bar", "YR_PORT": "1"}}
    env = env_of(build_pod(yri(**spec), incarnation=0, image="img", service_account="sa"))
    assert env["FOO"]["value"] == "bar"
    assert env["YR_PORT"]["value"] == "50051"


def test_pod_runs_as_the_instance_service_account() -> None:
    pod = build_pod(yri(), incarnation=0, image="img", service_account="yr-instance")
    assert pod["spec"]["serviceAccountName"] == "yr-instance"
    assert pod["spec"]["automountServiceAccountToken"] is True


def test_pod_is_non_root_and_hardened() -> None:
    pod = build_pod(yri(), incarnation=0, image="img", service_account="sa")
    sc = container(pod)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    tmp = next(v for v in pod["spec"]["volumes"] if v["name"] == "tmp")
    assert tmp == {"name": "tmp", "emptyDir": {}}


def test_pod_labels_select_the_instance_and_keep_user_labels() -> None:
    spec = {"podLabels": {"team": "a", "yr.dev/instance": "spoofed"}}
    labels = build_pod(yri(**spec), incarnation=0, image="i", service_account="s")["metadata"][
        "labels"
    ]
    assert labels == {
        "team": "a",
        "yr.dev/instance": "w1",
        "yr.dev/session": "s1",
        "app.kubernetes.io/name": "yr-instance",
    }


def test_instance_label_is_the_name_when_it_fits_a_label_value() -> None:
    name = "w" * 63
    pod = build_pod(yri(), incarnation=0, image="i", service_account="s")
    assert pod["metadata"]["labels"]["yr.dev/instance"] == "w1"
    assert instance_label_value(name) == name


def test_long_instance_name_gets_a_unique_hashed_label_that_is_a_valid_label_value() -> None:
    long_a, long_b = "a" * 62 + ".x-" + "1" * 30, "a" * 62 + ".x-" + "2" * 30
    obj = yri()
    obj["metadata"]["name"] = long_a
    pod = build_pod(obj, incarnation=2, image="i", service_account="s")
    label = pod["metadata"]["labels"]["yr.dev/instance"]
    assert label == instance_label_value(long_a) != instance_label_value(long_b)
    assert len(label) <= 63
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", label)
    # A pod without the incarnation annotation is still recognised by its name and label.
    del pod["metadata"]["annotations"]
    assert incarnation_of(pod) == 2


def test_spec_image_wins_over_the_operator_default() -> None:
    assert container(build_pod(yri(image="mine:1"), incarnation=0, image="d"))["image"] == "mine:1"
    assert container(build_pod(yri(), incarnation=0, image="d"))["image"] == "d"


def test_default_instance_image_is_the_charts_image_not_latest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("YR_INSTANCE_IMAGE", raising=False)
    chart = yaml.safe_load((REPO / "charts" / "yr" / "Chart.yaml").read_text())
    image = container(build_pod(yri(), incarnation=0, service_account="s"))["image"]
    assert image == f"yr:{chart['appVersion']}"


def test_instance_image_is_pulled_only_if_not_present_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("YR_INSTANCE_IMAGE_PULL_POLICY", raising=False)
    assert container(build_pod(yri(), incarnation=0, image="i"))["imagePullPolicy"] == (
        "IfNotPresent"
    )
    monkeypatch.setenv("YR_INSTANCE_IMAGE_PULL_POLICY", "Always")
    assert container(build_pod(yri(), incarnation=0, image="i"))["imagePullPolicy"] == "Always"


def test_instance_pod_gets_the_operators_image_pull_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("YR_INSTANCE_IMAGE_PULL_SECRETS", raising=False)
    assert "imagePullSecrets" not in build_pod(yri(), incarnation=0, image="i")["spec"]
    monkeypatch.setenv("YR_INSTANCE_IMAGE_PULL_SECRETS", "regcred, other")
    pod = build_pod(yri(), incarnation=0, image="i")
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]


# --- observe_pod ------------------------------------------------------------------------


def pod_with(status: dict, *, deleting: bool = False) -> dict:
    pod = build_pod(yri(), incarnation=0, image="i", service_account="s")
    pod["metadata"]["uid"] = "pod-uid"
    if deleting:
        pod["metadata"]["deletionTimestamp"] = NOW
    pod["spec"]["nodeName"] = "node-1"
    pod["status"] = status
    return pod


def terminated(**state: object) -> dict:
    return {
        "phase": "Failed",
        "containerStatuses": [{"name": "instance", "state": {"terminated": state}}],
    }


def test_unschedulable_pod_is_pending_with_the_schedulers_message() -> None:
    msg = "0/1 nodes are available: 1 Insufficient cpu."
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}
    st = observe_pod(pod_with({"phase": "Pending", "conditions": [cond]}))
    assert (st.phase, st.reason, st.message) == ("Pending", "Unschedulable", msg)


def test_running_pod_that_is_not_ready_is_running() -> None:
    st = observe_pod(
        pod_with(
            {
                "phase": "Running",
                "podIP": "127.0.0.9",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "instance", "state": {"running": {}}}],
            }
        )
    )
    assert (st.phase, st.pod_ip, st.node) == ("Running", "127.0.0.9", "node-1")


def test_ready_condition_makes_the_pod_ready() -> None:
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    assert observe_pod(pod_with(status)).phase == "Ready"


def test_exit_code_is_an_error_with_the_code() -> None:
    st = observe_pod(pod_with(terminated(exitCode=3, reason="Error")))
    assert (st.phase, st.reason, st.message) == ("Dead", "Error", "exit code 3")


def test_exit_code_137_is_reported_as_sigkill() -> None:
    st = observe_pod(pod_with(terminated(exitCode=137, reason="Error")))
    assert (st.reason, st.message) == ("Signal", "killed by signal 9 (SIGKILL)")


def test_signal_field_is_reported_by_name() -> None:
    st = observe_pod(pod_with(terminated(exitCode=143, signal=15)))
    assert (st.reason, st.message) == ("Signal", "killed by signal 15 (SIGTERM)")


def test_oom_killed_is_reported_as_oom() -> None:
    st = observe_pod(pod_with(terminated(exitCode=137, reason="OOMKilled")))
    assert st.reason == "OOMKilled" and "OOMKilled" in st.message


def test_evicted_pod_without_container_status_is_dead() -> None:
    st = observe_pod(pod_with({"phase": "Failed", "reason": "Evicted", "message": "low memory"}))
    assert (st.phase, st.reason, st.message) == ("Dead", "Evicted", "low memory")


def test_deleted_running_pod_is_terminating() -> None:
    st = observe_pod(pod_with({"phase": "Running"}, deleting=True))
    assert st.phase == "Terminating"


# --- status -----------------------------------------------------------------------------


def test_ready_condition_keeps_its_transition_time_while_unchanged() -> None:
    first = build_status(phase="Ready", pod_name="w1-0", now="t1")
    again = build_status(phase="Ready", pod_name="w1-0", previous=first, now="t2")
    assert again["conditions"][0]["lastTransitionTime"] == "t1"
    assert not status_changed(first, again)
    down = build_status(phase="Running", pod_name="w1-0", previous=again, now="t3")
    assert down["conditions"][0] == {
        "type": "Ready",
        "status": "False",
        "reason": "Running",
        "message": "",
        "lastTransitionTime": "t3",
    }


def test_status_patch_nulls_fields_that_went_away_but_keeps_kopf() -> None:
    patch = status_patch({"phase": "Ready", "old": 1, "kopf": {}}, {"phase": "Failed"})
    assert patch == {"phase": "Failed", "old": None}


# --- backoff and plan -------------------------------------------------------------------


def test_backoff_doubles_from_the_base_and_caps_at_sixty_seconds() -> None:
    assert [backoff_seconds(n, base=1.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_backoff_base_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YR_RESTART_BACKOFF_SECONDS", "0.25")
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]


def test_new_instance_plans_its_first_pod_as_pending() -> None:
    p = plan(yri(), [], now=0, now_iso=NOW)
    assert p.create == 0 and p.status["phase"] == "Pending" and p.status["podName"] == "w1-0"
    assert p.event == ("Normal", "Pending", "pod w1-0 is pending")


def test_unchanged_pod_plans_nothing() -> None:
    obj = yri()
    ready = pod_with({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    obj["status"] = plan(obj, [ready], now=0, now_iso=NOW).status
    again = plan(obj, [ready], now=1, now_iso="later")
    assert not status_changed(obj["status"], again.status)
    assert again.event is None and again.create is None and again.delete == ()


def test_only_a_started_pod_is_planned_to_hold_the_payload_secret() -> None:
    creating = {
        "phase": "Pending",
        "containerStatuses": [{"name": "instance", "state": {"waiting": {}}}],
    }
    assert plan(yri(), [pod_with(creating)], now=0, now_iso=NOW).started_pod is None
    running = pod_with({"phase": "Running"})
    assert plan(yri(), [running], now=0, now_iso=NOW).started_pod == ("w1-0", "pod-uid")
    dead = pod_with(terminated(exitCode=1))
    assert plan(yri(), [dead], now=0, now_iso=NOW).started_pod is None


def test_dead_pod_with_budget_plans_a_restart_after_backoff() -> None:
    obj = yri(maxRestarts=2)
    obj["status"] = {"phase": "Ready", "restarts": 0, "podName": "w1-0"}
    p = plan(obj, [pod_with(terminated(exitCode=137))], now=100, now_iso=NOW, backoff_base=1)
    assert p.status["phase"] == "Restarting" and p.status["restarts"] == 1
    assert p.delete == ("w1-0",) and p.restart_at == 101 and p.create is None
    assert p.event[0:2] == ("Warning", "Signal")
    obj["status"] = p.status
    assert plan(obj, [], now=100.5, now_iso=NOW, restart_at=101).create is None
    later = plan(obj, [], now=101, now_iso=NOW, restart_at=101)
    assert later.create == 1 and later.status["phase"] == "Pending"


def test_dead_pod_without_budget_fails_and_deletes_the_pod() -> None:
    obj = yri(maxRestarts=0)
    obj["status"] = {"phase": "Ready", "restarts": 0, "podName": "w1-0"}
    p = plan(obj, [pod_with(terminated(exitCode=3))], now=0, now_iso=NOW)
    assert (p.status["phase"], p.status["reason"], p.status["message"]) == (
        "Failed",
        "Error",
        "exit code 3",
    )
    assert p.delete == ("w1-0",) and p.create is None
    obj["status"] = p.status
    assert plan(obj, [], now=1, now_iso=NOW) == type(p)()


def test_pod_of_another_owner_with_the_same_name_is_ignored() -> None:
    foreign = pod_with({"phase": "Running"})
    foreign["metadata"]["ownerReferences"][0]["uid"] = "older-uid"
    assert plan(yri(), [foreign], now=0, now_iso=NOW).create == 0


def test_pod_deleted_by_someone_else_counts_as_a_death() -> None:
    obj = yri(maxRestarts=1)
    obj["status"] = {"phase": "Ready", "restarts": 0, "podName": "w1-0"}
    p = plan(obj, [], now=0, now_iso=NOW, backoff_base=1)
    assert (p.status["phase"], p.status["reason"]) == ("Restarting", "PodDeleted")


def test_pod_newer_than_the_status_is_adopted_not_duplicated() -> None:
    # The operator created w1-1 and died before writing restarts=1.
    obj = yri(maxRestarts=3)
    obj["status"] = {"phase": "Restarting", "restarts": 0, "podName": "w1-0"}
    newer = build_pod(obj, incarnation=1, image="i", service_account="s")
    newer["status"] = {"phase": "Pending"}
    p = plan(obj, [newer], now=0, now_iso=NOW)
    assert p.create is None and p.status["restarts"] == 1 and p.status["podName"] == "w1-1"


def test_pods_of_past_incarnations_are_deleted() -> None:
    obj = yri(maxRestarts=3)
    obj["status"] = {"phase": "Pending", "restarts": 1, "podName": "w1-1"}
    old = pod_with({"phase": "Failed"})
    current = build_pod(obj, incarnation=1, image="i", service_account="s")
    p = plan(obj, [old, current], now=0, now_iso=NOW)
    assert p.delete == ("w1-0",) and p.create is None


def test_instance_being_deleted_is_terminating_and_gets_no_pod() -> None:
    obj = yri()
    obj["metadata"]["deletionTimestamp"] = NOW
    p = plan(obj, [], now=0, now_iso=NOW)
    assert p.status["phase"] == "Terminating" and p.create is None


# --- status.lastTermination ---------------------------------------------------------------


def test_a_signal_death_is_recorded_as_structured_last_termination() -> None:
    obj = yri(maxRestarts=2)
    obj["status"] = {"phase": "Ready", "restarts": 0, "podName": "w1-0"}
    p = plan(obj, [pod_with(terminated(exitCode=137))], now=100, now_iso=NOW, backoff_base=1)
    assert p.status["lastTermination"] == {
        "incarnation": 0,
        "reason": "Signal",
        "message": "",
        "signal": 9,
    }


def test_an_exit_code_death_is_recorded_with_its_code_and_no_signal() -> None:
    obj = yri(maxRestarts=0)
    obj["status"] = {"phase": "Ready", "restarts": 0, "podName": "w1-0"}
    p = plan(obj, [pod_with(terminated(exitCode=3))], now=0, now_iso=NOW)
    assert p.status["lastTermination"] == {
        "incarnation": 0,
        "reason": "Error",
        "message": "",
        "exitCode": 3,
    }


def test_a_crash_keeps_the_containers_termination_message_as_data() -> None:
    obj = yri(maxRestarts=0)
    obj["status"] = {"phase": "Ready", "restarts": 0, "podName": "w1-0"}
    words = "Traceback ...\nModuleNotFoundError: No module named 'mine'"
    p = plan(obj, [pod_with(terminated(exitCode=1, message=words))], now=0, now_iso=NOW)
    ended = p.status["lastTermination"]
    assert (ended["exitCode"], ended["message"]) == (1, words)


def test_last_termination_survives_the_next_incarnation_becoming_ready() -> None:
    obj = yri(maxRestarts=1)
    obj["status"] = {"phase": "Ready", "restarts": 0, "podName": "w1-0"}
    obj["status"] = plan(obj, [pod_with(terminated(exitCode=3))], now=0, now_iso=NOW).status
    ready = pod_with({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    ready["metadata"]["name"] = "w1-1"
    ready["metadata"]["annotations"]["yr.dev/incarnation"] = "1"
    p = plan(obj, [ready], now=5, now_iso=NOW)
    assert p.status["phase"] == "Ready" and p.status["lastTermination"]["incarnation"] == 0


def test_pod_limits_and_requests_carry_the_custom_resources() -> None:
    spec = {"customResources": [{"name": "nvidia.com/gpu", "quantity": 2}]}
    resources = container(build_pod(yri(**spec), incarnation=0, image="img", service_account="sa"))[
        "resources"
    ]
    assert resources["limits"] == {"nvidia.com/gpu": "2"}
    assert resources["requests"]["nvidia.com/gpu"] == "2"
