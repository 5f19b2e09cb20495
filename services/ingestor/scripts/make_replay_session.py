"""Generate the bundled replay session (deterministic): ``uv run python services/ingestor/scripts/make_replay_session.py``.

Writes ``src/tickwatch_ingestor/data/replay_session.jsonl.gz``: a header line, then one
aggregate-trade-like line per trade, time-ordered across symbols::

    {"t": 1234, "s": "BTC-USDT", "a": 17, "p": "86412.57", "q": "0.01250", "v24": "…", "c24": "1.6821"}

``t`` is the offset in ms from the session start. The header carries each symbol's trading
rules as Binance sets them (``instruments``: step size, tick size, minimum notional), the
snapshot the ingestor publishes on ``market.instruments.v1`` when it replays. Prices follow a random walk pinned to end
where it started (a Brownian bridge in log price), so the session loops without a jump; the
24 h change is computed against a fixed 24 h open and the 24 h quote volume drifts with trading.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

SEED = 20261123
DURATION_MS = 30 * 60 * 1000
TRADES_PER_SYMBOL = 3000
OUT = (
    Path(__file__).resolve().parents[1]
    / "src"
    / "tickwatch_ingestor"
    / "data"
    / "replay_session.jsonl.gz"
)

# symbol: (start price, tick size, lot size, typical quantity, per-trade log sigma, 24h change %, 24h quote volume)
MARKETS: dict[str, tuple[str, str, str, float, float, str, str]] = {
    "BTC-USDT": ("86412.57", "0.01", "0.00001", 0.02, 0.00012, "1.6821", "1571234567.89"),
    "ETH-USDT": ("2874.33", "0.01", "0.0001", 0.6, 0.00016, "-0.4312", "812345678.12"),
    "SOL-USDT": ("137.42", "0.01", "0.001", 12.0, 0.00022, "3.1045", "402345678.55"),
    "BNB-USDT": ("845.10", "0.01", "0.001", 1.5, 0.00014, "0.8120", "98345678.40"),
    "XRP-USDT": ("2.0512", "0.0001", "0.1", 900.0, 0.00020, "-1.2207", "212345678.31"),
}
# Binance's minimum order value (NOTIONAL filter) on these USDT markets.
MIN_NOTIONAL = "5"


def bridge(rng: random.Random, n: int, sigma: float) -> list[float]:
    """n cumulative log-returns of a random walk that starts and ends at 0."""
    steps = [rng.gauss(0.0, sigma) for _ in range(n)]
    drift = sum(steps) / n
    out, acc = [], 0.0
    for s in steps:
        acc += s - drift
        out.append(acc)
    return out


def main() -> None:
    rng = random.Random(SEED)
    rows: list[dict[str, object]] = []
    for symbol, (p0, tick, lot, qty, sigma, chg0, vol0) in MARKETS.items():
        price0 = Decimal(p0)
        tick_d, lot_d = Decimal(tick), Decimal(lot)
        open24 = price0 / (1 + Decimal(chg0) / 100)
        gaps = [rng.expovariate(1.0) for _ in range(TRADES_PER_SYMBOL)]
        scale = (DURATION_MS - 1000) / sum(gaps)
        t = 0.0
        volume = Decimal(vol0)
        for i, (ret, gap) in enumerate(
            zip(bridge(rng, TRADES_PER_SYMBOL, sigma), gaps, strict=True)
        ):
            t += gap * scale
            price = (price0 * Decimal(math.exp(ret))).quantize(tick_d, ROUND_HALF_EVEN)
            q = Decimal(qty * rng.lognormvariate(0, 1.0)).quantize(lot_d, ROUND_HALF_EVEN)
            q = max(q, lot_d)
            volume += (price * q * Decimal(rng.uniform(-0.9, 1.1))).quantize(Decimal("0.01"))
            change = ((price - open24) / open24 * 100).quantize(Decimal("0.0001"))
            rows.append(
                {
                    "t": int(t),
                    "s": symbol,
                    "a": i + 1,
                    "p": str(price),
                    "q": str(q),
                    "v24": str(volume),
                    "c24": str(change),
                }
            )
    rows.sort(key=lambda r: (r["t"], r["s"]))
    header = {
        "session": {
            "duration_ms": DURATION_MS,
            "symbols": list(MARKETS),
            "seed": SEED,
            "trades": len(rows),
            "instruments": {
                symbol: {"step_size": lot, "tick_size": tick, "min_notional": MIN_NOTIONAL}
                for symbol, (_, tick, lot, *_) in MARKETS.items()
            },
        }
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        f.write((json.dumps(header) + "\n").encode())
        for r in rows:
            f.write((json.dumps(r, separators=(",", ":")) + "\n").encode())
    print(f"wrote {len(rows)} trades to {OUT}")


if __name__ == "__main__":
    main()
