-- The full ledger on top of 001: an account's whole exact state (accounting/domain.py's Account),
-- fills with their fee, deposits and withdrawals, orders, idempotency keys and valuation
-- snapshots. Every amount NUMERIC.

ALTER TABLE accounts
    ADD COLUMN reserved     numeric NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    ADD COLUMN fees_paid    numeric NOT NULL DEFAULT 0 CHECK (fees_paid >= 0),
    ADD COLUMN sell_fees    numeric NOT NULL DEFAULT 0 CHECK (sell_fees >= 0),
    ADD COLUMN net_deposits numeric NOT NULL DEFAULT 0;

-- The cost basis is the ledger's truth (fees excluded); avg_buy_price is kept as its view.
ALTER TABLE holdings
    ADD COLUMN cost numeric NOT NULL DEFAULT 0 CHECK (cost >= 0);

CREATE TABLE orders (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text NOT NULL REFERENCES accounts (user_id),
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('buy', 'sell')),
    type            text NOT NULL CHECK (type IN ('market', 'limit')),
    quantity        numeric NOT NULL CHECK (quantity > 0),
    limit_price     numeric CHECK (limit_price > 0),
    status          text NOT NULL CHECK (status IN ('open', 'filled', 'cancelled', 'rejected')),
    reserved        numeric NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    fill_price      numeric,
    fee             numeric,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'limit') = (limit_price IS NOT NULL))
);
CREATE INDEX orders_by_user_status ON orders (user_id, status, id DESC);

-- A fill is a trade: its fee (quote currency) and the order it filled.
ALTER TABLE trades
    ADD COLUMN fee      numeric NOT NULL DEFAULT 0 CHECK (fee >= 0),
    ADD COLUMN order_id bigint REFERENCES orders (id);

-- Cash flows: deposits (a new account's paper cash is its first) and withdrawals.
ALTER TABLE deposits
    ADD COLUMN kind text NOT NULL DEFAULT 'deposit' CHECK (kind IN ('deposit', 'withdrawal'));
CREATE INDEX deposits_by_user_time ON deposits (user_id, created_at, id);

-- The first answer to a request with an Idempotency-Key, replayed to its retries.
CREATE TABLE idempotency_keys (
    user_id         text NOT NULL REFERENCES accounts (user_id),
    key             text NOT NULL,
    fingerprint     text NOT NULL,
    status          integer NOT NULL,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, key)
);

CREATE TABLE valuation_snapshots (
    user_id         text NOT NULL REFERENCES accounts (user_id),
    ts              timestamptz NOT NULL,
    total_value     numeric NOT NULL,
    cash            numeric NOT NULL,
    PRIMARY KEY (user_id, ts)
);
