"""The SDK reads what the operator writes through yr.contract: deaths as data, advice per cause."""

from __future__ import annotations

import subprocess
import sys

from yr.runtime.kubernetes.diagnosis import schedule_error
from yr.runtime.kubernetes.watcher import death_from_status


def test_a_death_is_read_from_last_termination_not_from_the_message() -> None:
    status = {
        "phase": "Restarting",
        "restarts": 1,
        "message": "user printed 'exit code 7' and 'signal 3'; restart 1/2 in 1s",
        "lastTermination": {"incarnation": 0, "reason": "Error", "message": "", "exitCode": 2},
    }
    death = death_from_status(status, 0, will_restart=True, restarts_left=1)
    assert (death.exit_code, death.signal) == (2, None)
    assert death.describe() == "exited with code 2"


def test_a_module_missing_in_the_pod_points_to_register_pickle_by_value() -> None:
    words = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'mine'"
    ended = {"incarnation": 0, "reason": "Error", "message": words, "exitCode": 1}
    death = death_from_status({"lastTermination": ended}, 0, will_restart=False, restarts_left=0)
    text = death.describe()
    assert text.startswith("exited with code 1: ModuleNotFoundError: No module named 'mine'")
    assert "cloudpickle.register_pickle_by_value" in text and "instance.image" in text


def test_a_signal_death_names_the_signal() -> None:
    ended = {"incarnation": 3, "reason": "Signal", "message": "killed", "signal": 9}
    death = death_from_status(
        {"phase": "Failed", "restarts": 3, "lastTermination": ended},
        3,
        will_restart=False,
        restarts_left=0,
    )
    assert (death.exit_code, death.signal) == (None, 9)
    assert "SIGKILL" in death.describe()


def test_an_oom_kill_keeps_its_explanation() -> None:
    ended = {
        "incarnation": 0,
        "reason": "OOMKilled",
        "message": "out of memory: the container was OOMKilled (exit code 137)",
        "exitCode": 137,
    }
    death = death_from_status({"lastTermination": ended}, 0, will_restart=False, restarts_left=0)
    assert "out of memory" in death.describe()


def test_a_termination_of_another_incarnation_is_not_taken_for_this_one() -> None:
    ended = {"incarnation": 0, "reason": "Signal", "message": "killed", "signal": 9}
    status = {"reason": "PodDeleted", "lastTermination": ended}
    death = death_from_status(status, 1, will_restart=False, restarts_left=0)
    assert (death.signal, death.reason) == (None, "PodDeleted")


def test_an_instance_no_operator_touched_says_to_install_the_operator() -> None:
    error = schedule_error("w-1", "m.W", {}, timeout_s=30)
    assert "no operator has acted on YRInstance w-1" in str(error)
    assert "helm install" in str(error) and "cpu" not in str(error)


def test_a_failed_create_is_quoted_without_cpu_advice() -> None:
    message = 'pods "w-1-0" is forbidden: error looking up service account default/yr-instance'
    status = {"phase": "Pending", "reason": "FailedCreate", "message": message}
    error = str(schedule_error("w-1", "m.W", status, timeout_s=30))
    assert message in error and "cpu" not in error


def test_an_unschedulable_message_keeps_the_schedulers_words_without_a_double_period() -> None:
    message = (
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
        "1 No preemption victims found for incoming pod."
    )
    status = {"phase": "Pending", "reason": "Unschedulable", "message": message}
    error = str(schedule_error("w-1", "m.W", status, timeout_s=3))
    assert "1 Insufficient cpu" in error and "incoming pod. Lower its cpu" in error


def test_a_pod_waiting_on_the_kubelet_says_why() -> None:
    status = {
        "phase": "Pending",
        "reason": "CreateContainerConfigError",
        "message": 'secret "w-1-payload" not found',
    }
    error = str(schedule_error("w-1", "m.W", status, timeout_s=3))
    assert 'CreateContainerConfigError: secret "w-1-payload" not found' in error


def test_the_operator_imports_the_contract_without_the_sdks_kubernetes_backend() -> None:
    code = (
        "import sys, yr.contract, yr_operator.builders, yr_operator.status, yr_operator.plan; "
        "print('yr.runtime.kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
