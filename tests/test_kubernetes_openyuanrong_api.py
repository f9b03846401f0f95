"""openYuanrong's get / wait / put / resources semantics through the operator on the emulated
cluster (the operator runs as the chart's ServiceAccount)."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.operated import wait_until_yrinstance_gone, yrinstances
from tests.k8s_instances import Worker
from tests.support import wait_for


def test_resources_on_kubernetes_have_openyuanrongs_shape(session):
    (node,) = yr.resources()
    assert node["status"] == 0 and node["id"]
    assert node["capacity"] == {"CPU": 8000.0, "Memory": 16384.0}
    before = node["allocatable"]["CPU"]
    worker = Worker.invoke()
    yr.get(worker.pid.invoke(), timeout=120)
    (node,) = yr.resources()
    assert before - node["allocatable"]["CPU"] == 1000.0
    assert node["capacity"]["Memory"] - node["allocatable"]["Memory"] >= 128.0


def test_get_with_allow_partial_on_kubernetes_reads_a_late_ref_as_none(session, tmp_path):
    worker = Worker.invoke()
    yr.get(worker.pid.invoke(), timeout=120)
    late = worker.sleep_marked.invoke(60, str(tmp_path / "running"))
    assert yr.get([yr.put("now"), late], timeout=1, allow_partial=True) == ["now", None]


def test_wait_on_kubernetes_returns_after_one_ref_by_default(session, tmp_path):
    worker = Worker.invoke()
    late = worker.sleep_marked.invoke(60, str(tmp_path / "running"))
    quick = yr.put(1)
    assert yr.wait([late, quick], timeout=120) == ([quick], [late])


def test_put_with_create_param_on_kubernetes_reaches_the_instance(session):
    worker = Worker.invoke()
    shard = yr.put(3, yr.CreateParam())
    assert yr.get(worker.train.invoke(shard, 0.5), timeout=120) == "shard 3 loss 0.2"


def test_stateless_function_calls_on_kubernetes_reuse_pooled_worker_pods(cluster, session):
    from tests.compat_instances import worker_pid

    pids = yr.get([worker_pid.invoke() for _ in range(20)], timeout=180)
    assert len(set(pids)) < 20
    assert len(yrinstances(cluster, session)) == len(set(pids))


def test_an_instance_on_kubernetes_can_call_a_stateless_function(session):
    from tests.compat_instances import FunctionCaller

    caller = FunctionCaller.invoke()
    assert yr.get(caller.add_through_function.invoke(2, 5), timeout=180) == 7


def test_a_stateless_functions_error_on_kubernetes_reaches_the_caller(session):
    from tests.compat_instances import refuse

    with pytest.raises(KeyError, match="no such key"):
        yr.get(refuse.invoke("no such key"), timeout=180)


def test_named_instances_on_kubernetes_get_if_exists_and_list(session):
    named = yr.InvokeOptions(cpu=300, memory=128, name="keeper", namespace="team")
    first = Worker.options(named).invoke()
    again = Worker.options(named.merged(get_if_exists=True)).invoke()
    assert again == first
    with pytest.raises(ValueError, match="an instance named 'keeper' already exists"):
        Worker.options(named).invoke()
    assert yr.list_named_instances() == ["team-keeper"]


def test_get_instance_on_kubernetes_waits_for_the_name_and_kill_instance_ends_it(session):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        looking = pool.submit(yr.get_instance, "late", timeout=120)
        Worker.options(yr.InvokeOptions(cpu=300, memory=128, name="late")).invoke()
        handle = looking.result(timeout=150)
    assert yr.get(handle.train.invoke(1, 0.5), timeout=180) == "shard 1 loss 0.2"
    yr.kill_instance(handle.instance_id)
    wait_for(
        lambda: "late" not in yr.list_named_instances(),
        timeout=60,
        what="the killed instance to leave the list of names",
    )


def test_yr_exit_on_kubernetes_tells_its_callers_it_ended_by_its_own_yr_exit(cluster, session):
    from tests.compat_instances import Quitter

    quitter = Quitter.invoke()  # recover_retry_times=2: an exit is still not restarted
    yr.get(quitter.pid.invoke(), timeout=180)
    with pytest.raises(yr.YRError, match="ended by its own yr.exit\\(\\)"):
        yr.get(quitter.quit.invoke(), timeout=180)
    with pytest.raises(yr.YRError, match="ended by its own yr.exit\\(\\)"):
        yr.get(quitter.pid.invoke(), timeout=180)
    wait_until_yrinstance_gone(
        cluster, session, quitter.instance_id, what="the exited instance's YRInstance to go"
    )


def test_yr_exit_on_kubernetes_takes_the_instances_subtree_with_it(cluster, session):
    from tests.compat_instances import Quitter

    quitter = Quitter.invoke()
    yr.get(quitter.start_child.invoke(), timeout=180)
    assert len(yrinstances(cluster, session)) == 2
    yr.wait([quitter.quit.invoke()], timeout=180)
    wait_for(
        lambda: not yrinstances(cluster, session),
        timeout=60,
        what="the exited instance's subtree to go",
    )


def test_the_shutdown_hook_runs_when_the_pod_is_stopped_within_its_grace(
    cluster, session, tmp_path
):
    from tests.compat_instances import Tidy

    marker = tmp_path / "hook-ran"
    options = yr.InvokeOptions(cpu=100, custom_extensions={"GRACEFUL_SHUTDOWN_TIME": "12"})
    tidy = Tidy.options(options).invoke(str(marker))
    yr.get(tidy.pid.invoke(), timeout=180)
    pods = k8s.CoreV1Api(cluster.api_client()).list_namespaced_pod(session).items
    (pod,) = [p for p in pods if p.metadata.name.startswith(tidy.instance_id)]
    assert pod.spec.termination_grace_period_seconds == 17
    tidy.terminate()
    wait_for(marker.exists, timeout=120, what="the shutdown hook's marker")
    assert marker.read_text() == "12.0"
