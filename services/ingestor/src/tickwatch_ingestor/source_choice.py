"""Which market sources the ingestor runs: the fallback policy, on plain data (no I/O).

Two steps around the start-up probe (``sources.probe``, the I/O): :func:`wanted_sources` says
which live sources the settings ask for, and so which to probe; :func:`choose_sources` decides,
from which of them answered, whether they run or the bundled replay session runs instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tickwatch_ingestor.normalise import split_symbol

FALLBACK_MESSAGE = (
    "neither Binance nor CoinGecko is reachable; falling back to the bundled replay session"
)
FORCED_REPLAY = "forced by MARKET_SOURCES=replay"
FALLBACK_REPLAY = "fallback: neither exchange reachable"


@dataclass(frozen=True)
class Wanted:
    """The sources the settings ask for, before any is probed."""

    replay: bool = False  # MARKET_SOURCES names replay: nothing live is probed or run
    binance_symbols: tuple[str, ...] = ()  # the symbols Binance trades; empty: no Binance
    coingecko: bool = False
    coinbase_symbols: tuple[str, ...] = ()  # COINBASE_SYMBOLS; empty: no Coinbase


@dataclass(frozen=True)
class Choice:
    """What runs. ``unreachable``: no wanted live source answered the probe (logged); with
    ``mode == "live"`` they run anyway and retry (``MARKET_FALLBACK=none``)."""

    mode: Literal["live", "replay"]
    reason: str = ""
    binance_symbols: tuple[str, ...] = ()
    coingecko: bool = False
    coinbase_symbols: tuple[str, ...] = ()
    unreachable: bool = False


def wanted_sources(
    names: Sequence[str], symbols: Sequence[str], coinbase_symbols: Sequence[str] = ()
) -> Wanted:
    """``names`` as in MARKET_SOURCES; Binance has no ``*-USD`` markets (CoinGecko's quote).
    Coinbase streams its own list of markets (``coinbase_symbols``), not SYMBOLS."""
    if "replay" in names:
        return Wanted(replay=True)
    binance = tuple(s for s in symbols if split_symbol(s)[1] != "USD")
    return Wanted(
        binance_symbols=binance if "binance" in names else (),
        coingecko="coingecko" in names,
        coinbase_symbols=tuple(coinbase_symbols) if "coinbase" in names else (),
    )


def choose_sources(
    wanted: Wanted,
    *,
    binance_reachable: bool,
    coingecko_reachable: bool,
    coinbase_reachable: bool = False,
    fallback: Literal["replay", "none"],
) -> Choice:
    """Every wanted live source runs when at least one answered (one that did not keeps
    retrying); when none did, the replay session runs instead unless ``fallback`` is ``none``."""
    if wanted.replay:
        return Choice("replay", FORCED_REPLAY)
    answered = (
        (bool(wanted.binance_symbols) and binance_reachable)
        or (wanted.coingecko and coingecko_reachable)
        or (bool(wanted.coinbase_symbols) and coinbase_reachable)
    )
    if not answered and fallback == "replay":
        return Choice("replay", FALLBACK_REPLAY, unreachable=True)
    return Choice(
        "live",
        binance_symbols=wanted.binance_symbols,
        coingecko=wanted.coingecko,
        coinbase_symbols=wanted.coinbase_symbols,
        unreachable=not answered,
    )
