-- Performance figures: each cash flow keeps the account's total value just before it (the TWR
-- cuts its chain there; NULL on rows booked before this migration), and each valuation snapshot
-- the BTC-USDT price of its minute (the hold-BTC benchmark's start).

ALTER TABLE deposits ADD COLUMN value_before numeric;
ALTER TABLE valuation_snapshots ADD COLUMN btc_price numeric;
