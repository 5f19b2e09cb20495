"""The Coinbase Advanced Trade feed as a pure state machine: WebSocket frames in, ticks out.

Every frame of the market-data feed (``wss://advanced-trade-ws.coinbase.com``) is one envelope
``{"channel", "client_id", "timestamp", "sequence_num", "events": [...]}``; a failed request
is answered ``{"type": "error", "message": ..., "reason"?: ...}`` instead. The feed keeps:

- the connection's last ``sequence_num``: it counts up by one per message across every channel
  of a connection and starts again on the next, so a jump means messages were dropped
  (:meth:`CoinbaseFeed.new_connection` forgets it);
- per product, the highest trade id published and a bounded set of ids still missing, so a
  trade is published once however often it is delivered: ``market_trades`` sends the recent
  trades again as a ``snapshot`` on every (re)subscription, then ``update`` events. The first
  snapshot of a product publishes only its newest trade (the price now, not a replay of the
  last minutes); a later one publishes what was missed while away;
- per product, the latest ``ticker`` (best bid and ask, 24 h change), attached to its ticks.

No I/O and no clock: the caller passes ``ts_ingest``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from tickwatch_common.events import Tick

from tickwatch_ingestor.normalise import (
    PCT_QUANTUM,
    Rejected,
    decimal_field,
    json_frame,
    split_symbol,
)

MAX_TRACKED_MISSING = 10_000

_TIME = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?\s*(Z|[+-]\d\d:?\d\d)\Z")


def coinbase_time_ms(value: Any) -> int:
    """``2019-08-14T20:42:27.265Z`` (Coinbase writes up to nanoseconds) -> epoch ms, UTC."""
    m = _TIME.match(value) if isinstance(value, str) else None
    if m is None:
        raise Rejected("bad_timestamp", repr(value)[:80])
    whole, frac, zone = m.groups()
    try:
        at = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        raise Rejected("bad_timestamp", repr(value)[:80]) from None
    return int(at.timestamp()) * 1000 + int(((frac or "") + "000")[:3])


@dataclass(frozen=True, slots=True)
class Quote:
    """What the last ``ticker`` event said of a product."""

    bid: Decimal | None
    ask: Decimal | None
    change_24h_pct: Decimal | None


@dataclass(slots=True)
class Outcome:
    ticks: list[Tick] = field(default_factory=list)
    duplicates: int = 0  # trades delivered again (snapshot after a reconnect) and dropped
    trade_gap: int = 0  # trade ids skipped (missed, unless a later snapshot brings them)
    trade_filled: int = 0  # previously missing trade ids that arrived after all
    sequence_gap: int = 0  # messages the connection dropped (sequence_num jumped)
    rejected: list[str] = field(default_factory=list)  # reasons of the trades skipped
    error: str | None = None  # the server refused a request (e.g. a subscription)
    subscriptions: dict[str, list[str]] | None = None  # the server's confirmation
    heartbeat: bool = False


@dataclass(slots=True)
class _ProductState:
    last_trade: int | None = None
    missing: set[int] = field(default_factory=set)
    quote: Quote | None = None


class CoinbaseFeed:
    def __init__(self, products: Sequence[str]) -> None:
        # A Coinbase product id (BTC-USD) is the Tickwatch symbol as it is.
        self._state = {p: _ProductState() for p in products}
        self._split = {p: split_symbol(p) for p in products}
        self._last_seq: int | None = None

    @property
    def products(self) -> list[str]:
        return list(self._state)

    def new_connection(self) -> None:
        """Sequence numbers start again on each connection."""
        self._last_seq = None

    def handle(self, raw: str | bytes, ts_ingest: int) -> Outcome:
        """One frame. Raises :class:`Rejected` for a frame that is malformed as a whole."""
        frame = json_frame(raw)
        if frame.get("type") == "error":
            message = str(frame.get("message") or "error")
            reason = frame.get("reason")
            return Outcome(error=f"{message}: {reason}" if reason else message)
        channel = frame.get("channel")
        seq = frame.get("sequence_num")
        events = frame.get("events")
        if not isinstance(channel, str) or not isinstance(events, list):
            raise Rejected("no_envelope")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise Rejected("bad_sequence_num", repr(seq)[:40])
        out = Outcome()
        last = self._last_seq
        if last is not None and seq > last + 1:
            out.sequence_gap = seq - last - 1
        if last is None or seq > last:
            self._last_seq = seq
        if channel == "market_trades":
            self._market_trades(events, ts_ingest, out)
        elif channel == "ticker":
            self._ticker(events, out)
        elif channel == "heartbeats":
            out.heartbeat = True
        elif channel == "subscriptions":
            out.subscriptions = _subscriptions(events)
        else:
            raise Rejected("unknown_channel", repr(channel)[:40])
        return out

    def _market_trades(self, events: list[Any], ts_ingest: int, out: Outcome) -> None:
        for event in events:
            if not isinstance(event, dict) or not isinstance(event.get("trades"), list):
                out.rejected.append("bad_event")
                continue
            snapshot = event.get("type") == "snapshot"
            by_product: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
            for trade in event["trades"]:
                try:
                    product, trade_id = _trade_key(trade)
                except Rejected as exc:
                    out.rejected.append(exc.reason)
                    continue
                if product not in self._state:
                    out.rejected.append("unknown_product")
                    continue
                by_product.setdefault(product, []).append((trade_id, trade))
            for product, trades in by_product.items():
                trades.sort(key=lambda t: t[0])  # Coinbase lists the newest first
                state = self._state[product]
                if snapshot and state.last_trade is None:
                    # The first sight of this product: its latest trade only (see the module doc).
                    trades = trades[-1:]
                for trade_id, trade in trades:
                    self._trade(product, state, trade_id, trade, ts_ingest, out)

    def _trade(
        self,
        product: str,
        state: _ProductState,
        trade_id: int,
        trade: Mapping[str, Any],
        ts_ingest: int,
        out: Outcome,
    ) -> None:
        last = state.last_trade
        filled = False
        if last is not None and trade_id <= last:
            if trade_id not in state.missing:
                out.duplicates += 1
                return
            filled = True
        try:
            tick = self._tick(product, state.quote, trade_id, trade, ts_ingest)
        except Rejected as exc:
            out.rejected.append(exc.reason)
            return
        if filled:
            state.missing.discard(trade_id)
            out.trade_filled += 1
        elif last is None or trade_id > last:
            if last is not None and trade_id > last + 1:
                skipped = trade_id - last - 1
                out.trade_gap += skipped
                if len(state.missing) + skipped <= MAX_TRACKED_MISSING:
                    state.missing.update(range(last + 1, trade_id))
            state.last_trade = trade_id
        out.ticks.append(tick)

    def _tick(
        self,
        product: str,
        quote: Quote | None,
        trade_id: int,
        trade: Mapping[str, Any],
        ts_ingest: int,
    ) -> Tick:
        base, quote_ccy = self._split[product]
        try:
            return Tick(
                symbol=product,
                base=base,
                quote=quote_ccy,
                source="coinbase",
                price=decimal_field(trade.get("price"), "price"),
                bid=quote.bid if quote else None,
                ask=quote.ask if quote else None,
                change_24h_pct=quote.change_24h_pct if quote else None,
                ts_event=coinbase_time_ms(trade.get("time")),
                ts_ingest=ts_ingest,
                trade_id=trade_id,
            )
        except ValidationError as exc:
            raise Rejected("invalid", exc.errors()[0]["msg"]) from None

    def _ticker(self, events: list[Any], out: Outcome) -> None:
        for event in events:
            tickers = event.get("tickers") if isinstance(event, dict) else None
            if not isinstance(tickers, list):
                out.rejected.append("bad_event")
                continue
            for ticker in tickers:
                product = ticker.get("product_id") if isinstance(ticker, dict) else None
                state = self._state.get(product) if isinstance(product, str) else None
                if state is None:
                    out.rejected.append("unknown_product")
                    continue
                try:
                    state.quote = _quote(ticker)
                except Rejected as exc:
                    out.rejected.append(exc.reason)


def _trade_key(trade: Any) -> tuple[str, int]:
    if not isinstance(trade, dict):
        raise Rejected("bad_trade")
    product, raw_id = trade.get("product_id"), trade.get("trade_id")
    if not isinstance(product, str):
        raise Rejected("missing_field", "product_id")
    # Coinbase writes trade ids as strings of digits; Tick.trade_id is an integer.
    if not isinstance(raw_id, str) or not raw_id.isdigit():
        raise Rejected("bad_trade_id", repr(raw_id)[:40])
    return product, int(raw_id)


def _optional_decimal(ticker: Mapping[str, Any], key: str) -> Decimal | None:
    value = ticker.get(key)
    if value is None or value == "":
        return None
    return decimal_field(value, key)


def _quote(ticker: Mapping[str, Any]) -> Quote:
    change = _optional_decimal(ticker, "price_percent_chg_24_h")
    return Quote(
        bid=_optional_decimal(ticker, "best_bid"),
        ask=_optional_decimal(ticker, "best_ask"),
        change_24h_pct=change.quantize(PCT_QUANTUM) if change is not None else None,
    )


def _subscriptions(events: list[Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in events:
        subs = event.get("subscriptions") if isinstance(event, dict) else None
        if isinstance(subs, dict):
            for channel, ids in subs.items():
                found[str(channel)] = [str(i) for i in ids] if isinstance(ids, list) else []
    return found
