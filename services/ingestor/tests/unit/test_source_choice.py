"""The source-fallback policy on plain data: what runs for what the settings ask and what answered."""

from __future__ import annotations

from tickwatch_ingestor.source_choice import (
    FALLBACK_REPLAY,
    FORCED_REPLAY,
    Choice,
    Wanted,
    choose_sources,
    wanted_sources,
)

SYMBOLS = ["BTC-USDT", "ETH-USDT", "BTC-USD"]
BOTH = wanted_sources(["binance", "coingecko"], SYMBOLS)


def test_binance_is_asked_for_every_symbol_but_the_usd_ones() -> None:
    wanted = wanted_sources(["binance", "coingecko"], SYMBOLS)
    assert wanted == Wanted(binance_symbols=("BTC-USDT", "ETH-USDT"), coingecko=True)


def test_replay_named_in_the_sources_forces_replay_and_wants_nothing_live() -> None:
    wanted = wanted_sources(["binance", "replay"], SYMBOLS)
    assert wanted == Wanted(replay=True)
    choice = choose_sources(
        wanted, binance_reachable=True, coingecko_reachable=True, fallback="none"
    )
    assert choice == Choice("replay", FORCED_REPLAY)


def test_both_reachable_both_run() -> None:
    choice = choose_sources(
        BOTH, binance_reachable=True, coingecko_reachable=True, fallback="replay"
    )
    assert choice == Choice("live", binance_symbols=("BTC-USDT", "ETH-USDT"), coingecko=True)


def test_binance_down_coingecko_up_both_run_and_binance_keeps_retrying() -> None:
    choice = choose_sources(
        BOTH, binance_reachable=False, coingecko_reachable=True, fallback="replay"
    )
    assert choice == Choice("live", binance_symbols=("BTC-USDT", "ETH-USDT"), coingecko=True)


def test_coingecko_down_binance_up_both_run() -> None:
    choice = choose_sources(
        BOTH, binance_reachable=True, coingecko_reachable=False, fallback="replay"
    )
    assert choice.mode == "live" and not choice.unreachable


def test_neither_reachable_falls_back_to_replay() -> None:
    choice = choose_sources(
        BOTH, binance_reachable=False, coingecko_reachable=False, fallback="replay"
    )
    assert choice == Choice("replay", FALLBACK_REPLAY, unreachable=True)


def test_neither_reachable_with_no_fallback_runs_the_live_sources_anyway() -> None:
    choice = choose_sources(
        BOTH, binance_reachable=False, coingecko_reachable=False, fallback="none"
    )
    assert choice == Choice(
        "live", binance_symbols=("BTC-USDT", "ETH-USDT"), coingecko=True, unreachable=True
    )


def test_only_coingecko_wanted_binance_is_neither_probed_nor_run() -> None:
    wanted = wanted_sources(["coingecko"], SYMBOLS)
    assert wanted == Wanted(coingecko=True)
    choice = choose_sources(
        wanted, binance_reachable=False, coingecko_reachable=True, fallback="replay"
    )
    assert choice == Choice("live", coingecko=True)


def test_binance_only_with_only_usd_symbols_has_nothing_live_and_falls_back() -> None:
    wanted = wanted_sources(["binance"], ["BTC-USD"])
    assert wanted == Wanted()
    choice = choose_sources(
        wanted, binance_reachable=False, coingecko_reachable=False, fallback="replay"
    )
    assert choice == Choice("replay", FALLBACK_REPLAY, unreachable=True)


def test_a_source_that_answered_but_is_not_wanted_does_not_count() -> None:
    wanted = wanted_sources(["binance"], SYMBOLS)
    choice = choose_sources(
        wanted, binance_reachable=False, coingecko_reachable=True, fallback="replay"
    )
    assert choice.mode == "replay"


def test_coinbase_runs_its_own_markets_only_when_market_sources_names_it() -> None:
    coinbase = ["BTC-USD", "BTC-USDC"]
    assert wanted_sources(["binance", "coingecko"], SYMBOLS, coinbase).coinbase_symbols == ()
    wanted = wanted_sources(["binance", "coinbase"], SYMBOLS, coinbase)
    assert wanted == Wanted(
        binance_symbols=("BTC-USDT", "ETH-USDT"), coinbase_symbols=("BTC-USD", "BTC-USDC")
    )
    choice = choose_sources(
        wanted,
        binance_reachable=False,
        coingecko_reachable=False,
        coinbase_reachable=True,
        fallback="replay",
    )
    assert choice == Choice(
        "live", binance_symbols=("BTC-USDT", "ETH-USDT"), coinbase_symbols=("BTC-USD", "BTC-USDC")
    )


def test_coinbase_alone_and_unreachable_falls_back_to_replay() -> None:
    wanted = wanted_sources(["coinbase"], SYMBOLS, ["BTC-USD"])
    choice = choose_sources(
        wanted,
        binance_reachable=True,  # answered, but not wanted
        coingecko_reachable=True,
        coinbase_reachable=False,
        fallback="replay",
    )
    assert choice == Choice("replay", FALLBACK_REPLAY, unreachable=True)
