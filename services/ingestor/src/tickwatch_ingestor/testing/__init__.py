"""Local servers that speak the Binance and CoinGecko protocols, for tests and benchmarks.

Built from the wire-format samples in ``services/ingestor/tests/fixtures`` (the team's documented samples); nothing here is imported by the
service itself.
"""

from tickwatch_ingestor.testing.fake_binance import FakeBinance
from tickwatch_ingestor.testing.fake_coingecko import FakeCoinGecko

__all__ = ["FakeBinance", "FakeCoinGecko"]
