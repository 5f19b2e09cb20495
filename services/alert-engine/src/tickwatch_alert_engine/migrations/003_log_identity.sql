-- Which log each stored position belongs to: "<cluster id>/<topic id>" of market.ticks.v1
-- (tickwatch_common.log_identity). PostgreSQL outlives the broker's log (a topic recreated, a
-- cluster rebuilt or restored): an offset means something only against the log it was read
-- from. NULL: recorded before this column existed, judged by the partition's bounds alone.
-- The offset fencing of symbol_price and window_samples, and GREATEST on tick_offset, apply
-- only between records of the same log: a record of another log replaces the row.
ALTER TABLE tick_offset ADD COLUMN log text;
ALTER TABLE symbol_price ADD COLUMN log text;
ALTER TABLE window_samples ADD COLUMN log text;
