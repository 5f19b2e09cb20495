-- Limit orders that rest: a resting sell reserves its quantity in its holding (so resting and
-- market sells together never oversell); orders.reserved is a resting buy's cash (notional at
-- the limit plus its fee); the open orders are read back at start to rebuild the LimitBook.

ALTER TABLE holdings
    ADD COLUMN reserved numeric NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= quantity);

CREATE INDEX orders_open ON orders (id) WHERE status = 'open';
