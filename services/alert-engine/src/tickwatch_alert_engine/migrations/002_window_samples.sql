-- The samples [second, price] that a symbol's pct_change windows still hold (JSON, oldest
-- first), written in the same statement as the symbol's last price and its partition's next
-- tick offset, so a window rebuilt from it agrees with the offset the replay starts from.
-- next_offset is that record's offset: an older record (a replica that has not yet noticed it
-- lost the partition) never overwrites a newer one.
CREATE TABLE window_samples (
    symbol      text PRIMARY KEY,
    samples     jsonb NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The same guard for last prices: a price recorded with an older offset than the stored one
-- would pair a stale price with a newer position (a missed or invented crossing after a restart).
ALTER TABLE symbol_price ADD COLUMN next_offset bigint NOT NULL DEFAULT 0;
