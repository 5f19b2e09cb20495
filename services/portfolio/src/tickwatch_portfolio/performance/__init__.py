"""Returns over a range (TWR, XIRR, drawdown, a hold-BTC benchmark) and the history resolution rule."""
