-- Trigger state per alert, the last price per symbol, and the next tick offset per partition.
-- All three are written in one transaction per tick batch, so they always agree.
CREATE TABLE trigger_state (
    alert_id      text PRIMARY KEY,
    symbol        text NOT NULL,
    sequence      integer NOT NULL,
    last_fired_ms bigint,
    armed         boolean NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trigger_state_symbol ON trigger_state (symbol);

CREATE TABLE symbol_price (
    symbol     text PRIMARY KEY,
    price      numeric NOT NULL,
    ts_ms      bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tick_offset (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
