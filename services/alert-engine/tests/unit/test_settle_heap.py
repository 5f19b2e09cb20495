"""After a rebuild the index is out of the cyclic collector's reach, and the last one's cycles
are gone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from tickwatch_alert_engine.consumer import settle_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


def test_the_index_is_frozen_and_the_old_cycles_collected() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    gone = weakref.ref(a)
    gc.freeze()  # as after the previous rebuild
    del a, b
    index = [Node() for _ in range(10_000)]  # the new index
    settle_heap()
    assert gone() is None
    assert gc.get_freeze_count() >= len(index)
