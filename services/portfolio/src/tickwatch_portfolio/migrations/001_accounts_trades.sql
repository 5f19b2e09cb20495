-- Paper portfolios: one cash account per user, an append-only trade ledger, and holdings derived
-- from it. Money, prices and quantities are NUMERIC (exact decimals), never floating point.
-- Users belong to the gateway: user_id is its identifier, not a foreign key across schemas.

CREATE TABLE accounts (
    user_id         text PRIMARY KEY,
    quote_currency  text NOT NULL DEFAULT 'USDT',
    cash            numeric NOT NULL CHECK (cash >= 0),
    realized_pnl    numeric NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trades (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text NOT NULL REFERENCES accounts (user_id),
    symbol          text NOT NULL CHECK (symbol ~ '^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$'),
    side            text NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity        numeric NOT NULL CHECK (quantity > 0),
    price           numeric NOT NULL CHECK (price > 0),
    notional        numeric GENERATED ALWAYS AS (quantity * price) STORED,
    -- A client's retry of the same order must not trade twice.
    idempotency_key text,
    executed_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX trades_by_user_time ON trades (user_id, executed_at DESC, id DESC);

CREATE TABLE holdings (
    user_id         text NOT NULL REFERENCES accounts (user_id),
    symbol          text NOT NULL,
    quantity        numeric NOT NULL CHECK (quantity >= 0),
    avg_buy_price   numeric NOT NULL CHECK (avg_buy_price >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, symbol)
);

CREATE TABLE deposits (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text NOT NULL REFERENCES accounts (user_id),
    amount          numeric NOT NULL CHECK (amount > 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
