"""The stall decision of ConsumerProgress, with plain samples (time, log end, handled)."""

from __future__ import annotations

from tickwatch_common.consumer_progress import Sample, stalled


def samples(*rows: tuple[float, int | None, int]) -> list[Sample]:
    return [Sample(at, end, handled) for at, end, handled in rows]


def test_input_grows_while_handled_stays_put_past_the_bound_is_a_stall() -> None:
    assert stalled(samples((0, 10, 10), (20, 50, 10), (31, 90, 10)), stall_s=30)


def test_not_a_stall_until_the_bound_has_passed() -> None:
    assert not stalled(samples((0, 10, 10), (29, 90, 10)), stall_s=30)


def test_a_consumer_that_moves_is_never_stalled_however_far_behind() -> None:
    rows = samples((0, 1000, 0), (20, 2000, 100), (40, 3000, 200), (70, 4000, 300))
    assert not stalled(rows, stall_s=30)


def test_the_bound_counts_from_the_last_move_of_the_handled_position() -> None:
    rows = samples((0, 10, 0), (25, 40, 10), (50, 80, 10))
    assert not stalled(rows, stall_s=30)  # moved at 25: 25 s still
    assert stalled([*rows, Sample(56, 90, 10)], stall_s=30)


def test_caught_up_is_never_a_stall() -> None:
    assert not stalled(samples((0, 10, 10), (100, 10, 10)), stall_s=30)


def test_behind_on_a_quiet_log_is_not_a_stall() -> None:
    """No new input since the consumer stopped: nothing says it cannot keep up."""
    assert not stalled(samples((0, 50, 10), (100, 50, 10)), stall_s=30)


def test_an_end_never_known_decides_nothing() -> None:
    assert not stalled(samples((0, None, 10), (100, None, 10)), stall_s=30)
    assert not stalled(samples((0, None, 10), (100, 90, 10)), stall_s=30)
    assert not stalled([], stall_s=30)


def test_it_recovers_as_soon_as_the_handled_position_moves() -> None:
    rows = samples((0, 10, 10), (40, 90, 10))
    assert stalled(rows, stall_s=30)
    assert not stalled([*rows, Sample(41, 95, 11)], stall_s=30)
