"""Asking for a detached instance: openYuanrong's and Ray's spellings, and the bad requests
refused before anything is created."""

from __future__ import annotations

import pytest

import yr
from tests.instances import Counter


def test_rays_lifetime_detached_asks_for_a_detached_instance():
    assert yr.InvokeOptions(lifetime="detached").is_detached
    assert not yr.InvokeOptions(lifetime="non_detached").is_detached
    assert not yr.InvokeOptions().is_detached


def test_openyuanrongs_lifecycle_extension_asks_for_a_detached_instance():
    opt = yr.InvokeOptions()
    opt.custom_extensions["lifecycle"] = "detached"
    assert opt.checked().is_detached


def test_a_bad_lifetime_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="InvokeOptions.lifetime must be None, 'detached'"):
        yr.InvokeOptions(lifetime="forever")


def test_a_bad_lifecycle_extension_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="custom_extensions\\['lifecycle'\\] can only be"):
        yr.InvokeOptions(custom_extensions={"lifecycle": "forever"})


def test_a_detached_instance_without_a_name_is_refused_before_it_is_created(local_runtime):
    with pytest.raises(ValueError, match="a detached instance needs a name"):
        Counter.options(yr.InvokeOptions(cpu=100, lifetime="detached")).invoke()
    assert not local_runtime._instances  # registered synchronously by create()
