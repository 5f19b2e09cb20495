"""Live revaluation on each tick of only the portfolios holding that symbol, and per-user conflation."""
