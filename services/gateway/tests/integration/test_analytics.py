"""Analytics over candles published to the real broker: movers, a volume spike, per-symbol
figures equal to the pure functions on the same candles, bad input, and the WebSocket push."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from tickwatch_common.events import Candle
from tickwatch_devstack.infra import Stack
from tickwatch_devstack.testing import receive_json_until
from tickwatch_gateway.analytics import domain
from tickwatch_gateway.market import Bar

from .conftest import MakeClient
from .test_history import publish, until
from .test_websocket import wait_ready

T0 = 1_700_003_600_000
MIN = 60_000


def candle(symbol: str, i: int, o: str, h: str, lo: str, c: str, v: str) -> Candle:
    t = T0 + i * MIN
    return Candle(
        symbol=symbol,
        source="replay",
        interval="1m",
        open_time=t,
        close_time=t + MIN - 1,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=v,
        closed=True,
    )


def bar_of(c: Candle) -> Bar:
    return Bar(
        c.open_time,
        c.close_time,
        Decimal(c.open),
        Decimal(c.high),
        Decimal(c.low),
        Decimal(c.close),
        Decimal(c.volume),
        c.closed,
    )


def mine(items: list[dict[str, Any]], symbols: set[str]) -> list[tuple[str, str]]:
    return [(i["symbol"], i["change_pct"]) for i in items if i["symbol"] in symbols]


async def test_movers_spikes_figures_and_the_movers_push(
    stack: Stack, make_client: MakeClient
) -> None:
    # Symbols of its own: the candle topic is shared by the whole session.
    tag = uuid.uuid4().hex[:5].upper()
    up, down, spiky = f"U{tag}-USDT", f"D{tag}-USDT", f"S{tag}-USDT"
    client = await make_client(symbols=f"{up},{down},{spiky}")
    await wait_ready(client)
    # Each symbol's 1h window ends at minute 180 and holds minutes 121..180.
    end = "2023-11-15T02:13:20.000Z"  # minute 180; minute 0 is 2023-11-14T23:13:20Z
    # up: 100 → 110 = +10 %; high 112, low 99; VWAP Σ((H+L+C)/3 * V) / ΣV =
    #     (101.666… * 1 + 105 * 2 + 109 * 3) / 6 = 638.666… / 6 = 106.444…
    ups = [
        candle(up, 0, "90", "91", "89", "90", "6"),
        candle(up, 150, "100", "104", "99", "102", "1"),
        candle(up, 170, "102", "108", "101", "106", "2"),
    ]
    last_up = candle(up, 180, "106", "112", "105", "110", "3")
    # down: 200 → 190 = -5 %; volume 4 against 8 in the window before: ratio 0.5
    downs = [
        candle(down, 100, "210", "211", "209", "210", "8"),
        candle(down, 180, "200", "201", "189", "190", "4"),
    ]
    # spiky: 50 → 51 = +2 %; volume 45 against 20 and 10 in the two windows before: ratio 3
    spikes = [
        candle(spiky, 30, "49", "50", "48", "49", "20"),
        candle(spiky, 90, "49", "50", "48", "49", "10"),
        candle(spiky, 180, "50", "52", "49", "51", "45"),
    ]
    await publish(stack, ups + downs + spikes)
    await until(client, f"/api/v1/analytics/{down}", lambda b: b["candles"] == 1)
    await until(client, f"/api/v1/analytics/{spiky}", lambda b: b["candles"] == 1)
    await until(client, f"/api/v1/analytics/{up}", lambda b: b["candles"] == 2)

    # The push: the next closed candle brings the 1h movers, computed once it is stored.
    ws = await client.ws_connect("/ws")
    await ws.send_json({"op": "subscribe", "channels": ["analytics:movers"]})
    await receive_json_until(ws, lambda b: b.get("op") == "subscribed")
    await publish(stack, [last_up])
    pushed = await receive_json_until(ws, lambda b: b.get("channel") == "analytics:movers")
    symbols = {up, down, spiky}
    assert mine(pushed["data"]["gainers"], symbols) == [(up, "10"), (spiky, "2")]
    assert mine(pushed["data"]["losers"], symbols) == [(down, "-5")]

    movers = await (await client.get("/api/v1/analytics/movers?window=1h&limit=50")).json()
    assert movers == pushed["data"]
    gainer = next(g for g in movers["gainers"] if g["symbol"] == up)
    assert (gainer["open"], gainer["close"], gainer["as_of"]) == ("100", "110", end)

    figures = await (await client.get(f"/api/v1/analytics/{up.lower()}?window=1h")).json()
    assert figures["source"] == "replay"
    assert figures["candles"] == 3
    assert (figures["high"], figures["low"], figures["change_pct"]) == ("112", "99", "10")
    assert figures["vwap"] == "106.444444444444"
    assert (figures["end"], figures["start"]) == (end, "2023-11-15T01:43:20.000Z")
    window = domain.window_bars([bar_of(c) for c in [*ups, last_up]], "1h")
    expected = domain.summarise(window)
    assert expected is not None
    assert figures["vwap"] == domain.figure(expected.vwap)
    assert figures["volatility"] == domain.figure(expected.volatility)
    assert figures["volume"] == "6"
    whole_day = await (await client.get(f"/api/v1/analytics/{up}?window=24h")).json()
    # 24h also holds minute 0: 90 → 110 = +22.222… %
    day = (whole_day["candles"], whole_day["change_pct"], whole_day["low"])
    assert day == (4, "22.222222222222", "89")

    spike_path = "/api/v1/analytics/volume-spikes?window=1h&lookback=2&threshold=2"
    spiked = await (await client.get(spike_path)).json()
    assert [(s["symbol"], s["ratio"], s["average"]) for s in spiked["items"]] == [
        (spiky, "3", "15")
    ]
    every = await (
        await client.get("/api/v1/analytics/volume-spikes?window=1h&lookback=3&threshold=0")
    ).json()
    ratios = [(s["symbol"], s["ratio"], s["windows"]) for s in every["items"]]
    assert ratios == [(spiky, "3", 2), (up, "1", 1), (down, "0.5", 1)]

    for path, field in [
        ("/api/v1/analytics/movers?window=2h", "window"),
        ("/api/v1/analytics/movers?limit=0", "limit"),
        ("/api/v1/analytics/volume-spikes?threshold=-1", "threshold"),
        ("/api/v1/analytics/volume-spikes?lookback=49", "lookback"),
        (f"/api/v1/analytics/{up}?window=1d", "window"),
    ]:
        resp = await client.get(path)
        assert resp.status == 422, path
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["errors"][0]["field"] == field
    unknown = await client.get("/api/v1/analytics/NOPE-USDT")
    assert unknown.status == 404
    await ws.close()
