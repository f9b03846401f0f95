"""Remote errors: the user's type at any depth, readable tracebacks, and no remote SystemExit."""

from __future__ import annotations

import importlib
import linecache
import subprocess
import sys
import textwrap
import threading

import cloudpickle
import pytest

import yr
from yr import serialization, tracebacks
from yr.runtime.local.runtime import LocalRuntime


@pytest.fixture
def local_runtime(shared_local_runtime: LocalRuntime) -> LocalRuntime:
    """This module's tests do not interfere: they share one session, each cleaned up after."""
    return shared_local_runtime


class CodeError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class HoldsALock(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Relay:
    """Passes a call ``depth`` instances down; the last one raises."""

    def __init__(self) -> None:
        self.child = None

    def fail(self, depth: int) -> None:
        if depth == 0:
            raise ValueError("raised at the bottom")
        if self.child is None:
            self.child = Relay.invoke()
        yr.get(self.child.fail.invoke(depth - 1))  # let the callee's error propagate

    def raise_code_error(self) -> None:
        raise CodeError(42, "nope")

    def raise_unpicklable(self) -> None:
        raise HoldsALock()

    def exit(self, code: int) -> None:
        sys.exit(code)

    def interrupt(self) -> None:
        raise KeyboardInterrupt

    def ping(self) -> str:
        return "still serving"


def test_an_exception_keeps_its_type_through_a_supervisor_that_lets_it_propagate(local_runtime):
    with pytest.raises(ValueError, match="raised at the bottom") as caught:
        yr.get(Relay.invoke().fail.invoke(1))
    assert isinstance(caught.value, yr.YRInvokeError)
    assert type(caught.value.cause) is ValueError


def test_a_propagated_exception_shows_one_traceback_per_hop_innermost_first(local_runtime):
    with pytest.raises(ValueError) as caught:
        yr.get(Relay.invoke().fail.invoke(2))
    text = str(caught.value)
    assert text.count("Remote traceback") == 1
    assert text.count("Traceback (most recent call last)") == 3
    raised = text.index('raise ValueError("raised at the bottom")')
    propagated = [i for i in range(len(text)) if text.startswith("yr.get(self.child", i)]
    assert len(propagated) == 2 and raised < propagated[0]


def test_remote_tracebacks_hide_yr_and_concurrent_futures_frames(local_runtime):
    with pytest.raises(yr.YRInvokeError) as caught:
        yr.get(Relay.invoke().fail.invoke(1))
    text = str(caught.value)
    assert "concurrent/futures" not in text
    assert "/yr/" not in text
    assert "test_remote_errors.py" in text


def test_an_exception_whose_init_takes_several_arguments_keeps_its_type(local_runtime):
    with pytest.raises(CodeError, match="42: nope") as caught:
        yr.get(Relay.invoke().raise_code_error.invoke())
    assert caught.value.code == 42


def test_an_exception_that_cannot_be_pickled_says_so_and_why(local_runtime):
    with pytest.raises(yr.YRInvokeError) as caught:
        yr.get(Relay.invoke().raise_unpicklable.invoke())
    text = str(caught.value)
    assert "HoldsALock" in text and "holds a lock" in text
    assert "could not be sent back" in text and "lock" in text.split("could not be sent back")[1]


def test_a_remote_sys_exit_arrives_as_a_yr_invoke_error_that_is_no_system_exit(local_runtime):
    relay = Relay.invoke()
    with pytest.raises(yr.YRInvokeError) as caught:
        yr.get(relay.exit.invoke(3))
    assert not isinstance(caught.value, SystemExit)
    assert "SystemExit: 3" in str(caught.value)
    assert yr.get(relay.ping.invoke()) == "still serving"


def test_a_remote_keyboard_interrupt_arrives_as_a_yr_invoke_error(local_runtime):
    with pytest.raises(yr.YRInvokeError) as caught:
        yr.get(Relay.invoke().interrupt.invoke())
    assert not isinstance(caught.value, KeyboardInterrupt)


def test_a_traceback_through_a_driver_script_class_names_its_file_and_source_line(tmp_path):
    script = tmp_path / "driver_script.py"
    script.write_text(
        textwrap.dedent(
            """
            import yr

            @yr.instance
            class Broken:
                def run(self):
                    raise ValueError("from the driver script")

            yr.init(yr.Config(num_cpus=4))
            try:
                yr.get(Broken.invoke().run.invoke())
            except ValueError as error:
                print(error)
            finally:
                yr.finalize()
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f'File "{script}", line 7, in run' in result.stdout
    assert 'raise ValueError("from the driver script")' in result.stdout
    assert "<dynamic-code>" not in result.stdout


def test_by_value_code_shows_its_source_where_its_file_does_not_exist(tmp_path, monkeypatch):
    module_file = tmp_path / "gone_module.py"
    module_file.write_text("def explode():\n    raise ValueError('no file here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("gone_module")
    cloudpickle.register_pickle_by_value(module)
    try:
        blob = serialization.dumps(module.explode)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        sys.modules.pop("gone_module")
    module_file.unlink()  # as in a pod, which never had the driver's files
    linecache.clearcache()
    with pytest.raises(ValueError) as caught:
        serialization.loads(blob)()
    text = tracebacks.format_error(caught.value)
    assert f'File "{module_file}", line 2, in explode' in text
    assert "raise ValueError('no file here')" in text
