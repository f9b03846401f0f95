"""Generator methods and functions: a generator of refs, each item as soon as it is yielded."""

from __future__ import annotations

import itertools

import pytest

import yr
from tests.compat_instances import Streamer, squares

DEADLINE_S = 60


def _values(refs) -> list:
    return [yr.get(ref, timeout=DEADLINE_S) for ref in refs]


def test_a_generator_method_returns_a_generator_of_refs(local_runtime):
    streamer = Streamer.invoke()
    stream = streamer.count_to.invoke(4)
    assert isinstance(stream, yr.ObjectRefGenerator)
    assert _values(stream) == [1, 2, 3, 4]


def test_items_arrive_as_they_are_yielded_not_when_the_generator_ends(local_runtime):
    streamer = Streamer.invoke()
    stream = streamer.forever.invoke()
    assert _values(itertools.islice(stream, 3)) == [0, 1, 2]


def test_an_exception_mid_stream_arrives_at_its_item(local_runtime):
    streamer = Streamer.invoke()
    refs = list(streamer.fail_at.invoke(2))
    assert _values(refs[:2]) == [0, 1]
    with pytest.raises(ValueError, match="broken at item 2"):
        yr.get(refs[2], timeout=DEADLINE_S)
    assert len(refs) == 3


def test_an_async_generator_method_streams_too(local_runtime):
    streamer = Streamer.invoke()
    assert _values(streamer.async_count_to.invoke(3)) == [0, 1, 2]


def test_a_generator_function_streams_from_its_pooled_worker(local_runtime):
    assert _values(squares.invoke(4)) == [0, 1, 4, 9]


def test_other_calls_still_work_after_a_stream(local_runtime):
    streamer = Streamer.invoke()
    assert _values(streamer.count_to.invoke(2)) == [1, 2]
    assert _values(streamer.count_to.invoke(1)) == [1]
