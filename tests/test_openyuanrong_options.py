"""openYuanrong's options idioms run unchanged: mutable options, its other fields accepted."""

from __future__ import annotations

import warnings

import pytest

import yr
from yr import ignored_options
from yr.ignored_options import IgnoredOptionWarning


@pytest.fixture(autouse=True)
def _fresh_warnings():
    ignored_options.forget_warnings()
    yield
    ignored_options.forget_warnings()


def test_invoke_options_are_set_field_by_field():
    opt = yr.InvokeOptions()
    opt.cpu = 2000
    opt.recover_retry_times = 3
    opt.pod_labels["team"] = "a"
    assert (opt.cpu, opt.recover_retry_times, opt.pod_labels) == (2000, 3, {"team": "a"})


def test_a_bad_value_set_on_options_names_the_field_at_once():
    opt = yr.InvokeOptions()
    with pytest.raises(ValueError, match="InvokeOptions.cpu must be between 1 and"):
        opt.cpu = -1
    assert opt.cpu == 500


def test_a_bad_value_put_in_a_dict_in_place_is_refused_when_the_options_are_used():
    opt = yr.InvokeOptions()
    opt.env_vars["A"] = 1
    with pytest.raises(TypeError, match="InvokeOptions.env_vars must be a dict of str to str"):
        yr.instance(invoke_options=opt)(type("Plain", (), {}))


def test_a_misspelt_option_set_on_options_is_refused_with_the_known_names():
    opt = yr.InvokeOptions()
    with pytest.raises(AttributeError, match="InvokeOptions has no option 'cpus'; known options"):
        opt.cpus = 1000


def test_options_edited_after_use_do_not_change_the_class_they_were_given_to():
    opt = yr.InvokeOptions(cpu=1000)
    creator = yr.instance(invoke_options=opt)(type("Plain", (), {}))
    opt.cpu = 3000
    assert creator._options.cpu == 1000


def test_an_openyuanrong_invoke_option_without_effect_is_accepted_with_one_warning():
    with pytest.warns(IgnoredOptionWarning, match="InvokeOptions.trace_id has no effect in yr"):
        opt = yr.InvokeOptions(trace_id="t-1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.trace_id = "t-2"  # already warned about in this process
    assert opt.trace_id == "t-2"


def test_an_unset_ignored_option_reads_as_openyuanrongs_default():
    assert yr.InvokeOptions().max_invoke_latency == 5000


def test_an_openyuanrong_config_field_without_effect_is_accepted_with_a_warning_naming_why():
    with pytest.warns(IgnoredOptionWarning, match="Config.server_address has no effect in yr: yr"):
        conf = yr.Config(server_address="10.0.0.1:31222")
    assert conf.server_address == "10.0.0.1:31222"


def test_config_fields_are_set_field_by_field_and_checked_when_set():
    conf = yr.Config()
    conf.num_cpus = 4
    with pytest.raises(ValueError, match="Config.backend must be one of"):
        conf.backend = "yarn"
    assert conf.num_cpus == 4


def test_runtime_env_env_vars_reach_the_instance_under_env_vars_which_win():
    opt = yr.InvokeOptions(env_vars={"A": "1"})
    opt.runtime_env = {"env_vars": {"A": "0", "B": "2"}}
    assert opt.checked().env_vars == {"A": "1", "B": "2"}


def test_other_runtime_env_keys_warn_that_only_env_vars_is_applied():
    with pytest.warns(IgnoredOptionWarning, match="runtime_env\\['conda'\\] has no effect"):
        yr.InvokeOptions(runtime_env={"conda": "pytorch_p39"})


def test_custom_extensions_concurrency_sets_the_concurrency_left_at_its_default():
    opt = yr.InvokeOptions(custom_extensions={"Concurrency": "8"})
    assert opt.checked().concurrency == 8
    opt.concurrency = 2
    assert opt.checked().concurrency == 2


def test_a_bad_custom_extensions_concurrency_is_refused():
    with pytest.raises(ValueError, match="custom_extensions\\['Concurrency'\\] must be an integer"):
        yr.InvokeOptions(custom_extensions={"Concurrency": "many"})


def test_local_mode_means_the_local_runtime(monkeypatch):
    monkeypatch.setenv("YR_BACKEND", "kubernetes")
    assert yr.Config(local_mode=True).backend == "local"


def test_local_mode_with_the_kubernetes_backend_is_refused():
    with pytest.raises(ValueError, match="local_mode=True runs on the local runtime"):
        yr.Config(local_mode=True, backend="kubernetes")


def test_a_bad_log_level_is_refused():
    with pytest.raises(ValueError, match="Config.log_level must be one of ERROR"):
        yr.Config(log_level="LOUD")


def test_options_built_field_by_field_reach_the_instance(local_runtime):
    from tests.compat_instances import EnvReader

    opt = yr.InvokeOptions()
    opt.cpu = 300
    opt.runtime_env["env_vars"] = {"YR_TEST_FROM_RUNTIME_ENV": "yes"}
    reader = EnvReader.options(opt).invoke()
    assert yr.get(reader.read.invoke("YR_TEST_FROM_RUNTIME_ENV"), timeout=60) == "yes"


def test_yr_schedule_timeout_ms_sets_the_schedule_timeout_of_options_that_leave_it_unset(
    monkeypatch,
):
    monkeypatch.setenv("YR_SCHEDULE_TIMEOUT_MS", "1500")
    assert yr.InvokeOptions(cpu=1000).schedule_timeout_ms == 1500
    assert yr.InvokeOptions(schedule_timeout_ms=30000).schedule_timeout_ms == 30000
