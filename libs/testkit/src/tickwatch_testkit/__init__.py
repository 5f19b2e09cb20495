"""Test-only support: local servers that speak the Binance, CoinGecko and Coinbase protocols,
and a topic reader, for tests and benchmarks.

Built from the wire-format samples in ``services/ingestor/tests/fixtures``. It is a dev
dependency of the workspace only: no service depends on it and no image installs it (the
``init`` image leaves it out with ``--no-install-package``), so no fake ships.
"""

from tickwatch_testkit.fake_binance import FakeBinance
from tickwatch_testkit.fake_coinbase import FakeCoinbase
from tickwatch_testkit.fake_coingecko import FakeCoinGecko

__all__ = ["FakeBinance", "FakeCoinGecko", "FakeCoinbase"]
