"""The live valuation's adapter with a fake publisher and clock: a user's own change goes out at
once when the user's second allows, ticks only reach holders, and everything is conflated to one
event a second per user, the latest value winning."""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType

from prometheus_client import REGISTRY
from tickwatch_common.events import Valuation
from tickwatch_common.topics import PORTFOLIO_VALUATIONS, Topic
from tickwatch_devstack.testing import replay_tick
from tickwatch_portfolio.accounting.domain import Account, Holding
from tickwatch_portfolio.valuation.live import LiveValuation

D = Decimal


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Valuation]] = []

    async def publish(self, topic: Topic, event: Valuation, *, key: str) -> None:
        self.sent.append((topic.name, key, event))


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def _account(cash: str, **holdings: tuple[str, str]) -> Account:
    return Account(
        cash=D(cash),
        reserved=D(0),
        holdings=MappingProxyType({s: Holding(D(q), D(c), D(0)) for s, (q, c) in holdings.items()}),
        realized_pnl=D(0),
        fees_paid=D(0),
        sell_fees=D(0),
        net_deposits=D(cash),
    )


async def test_own_change_at_once_ticks_conflated_latest_wins() -> None:
    publisher, clock = FakePublisher(), Clock()
    live = LiveValuation(publisher, clock)
    live.load([("idle", _account("50"))])
    live.on_committed("u", _account("800", **{"BTC-USDT": ("2", "200")}))
    assert await live.flush() == 1
    assert publisher.sent[0][:2] == (PORTFOLIO_VALUATIONS.name, "u")

    for price in ("100", "101", "102"):
        await live.on_ticks([replay_tick("BTC-USDT", price, clock.ms)])
        await live.flush()
    await live.on_ticks([replay_tick("ETH-USDT", "5", clock.ms)])  # nobody holds it
    assert [key for _, key, _ in publisher.sent] == ["u"]  # cooling since its own change
    clock.ms += 1000
    assert await live.flush() == 1
    last = publisher.sent[-1][2]
    assert last.total_value == D("1004")  # 800 + 2 x 102
    assert last.holdings[0].unrealized_pnl == D("4")
    assert await live.flush() == 0


async def test_own_changes_within_a_second_are_one_event_with_the_last() -> None:
    publisher, clock = FakePublisher(), Clock()
    live = LiveValuation(publisher, clock)
    timed = _flushes_timed()
    live.on_committed("u", _account("900"))
    assert await live.flush() == 1
    for cash in ("800", "700", "600"):  # three orders within the user's second
        clock.ms += 100
        live.on_committed("u", _account(cash))
        assert await live.flush() == 0
    clock.ms += 700
    assert await live.flush() == 1
    assert [event.cash for _, _, event in publisher.sent] == [D("900"), D("600")]
    assert _flushes_timed() == timed + 2  # the rounds that published, not the empty ones


def _flushes_timed() -> float:
    return REGISTRY.get_sample_value("portfolio_valuation_flush_seconds_count") or 0.0


async def test_a_holding_sold_leaves_the_valuation() -> None:
    live = LiveValuation(FakePublisher(), Clock())
    live.set_account("u", _account("0", **{"BTC-USDT": ("1", "10")}))
    await live.on_ticks([replay_tick("BTC-USDT", "20", 1)])
    live.on_committed("u", _account("20"))
    value = live.valuer.valuation("u")
    assert (value.total_value, value.holdings) == (D("20"), ())
    assert live.valuer.index.count("BTC-USDT") == 0
