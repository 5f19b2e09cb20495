-- Price alerts, their trigger history with delivery status, and the outbox that carries every
-- change to alerts.changes.v1 (written in the same transaction as the change).

CREATE TABLE alerts (
    id               uuid PRIMARY KEY,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol           text NOT NULL,
    condition        text NOT NULL,
    target_price     numeric,
    pct              numeric,
    window_seconds   integer,
    frequency        text NOT NULL,
    cooldown_seconds integer NOT NULL DEFAULT 0,
    expires_at       timestamptz,
    status           text NOT NULL,
    channels         text[] NOT NULL,
    webhook_url      text,
    webhook_secret   text,
    note             text,
    version          bigint NOT NULL,
    trigger_count    integer NOT NULL DEFAULT 0,
    triggered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_user_created ON alerts (user_id, created_at DESC, id DESC);

-- One row per trigger (event_id is deterministic, so a redelivered trigger is a no-op).
CREATE TABLE alert_events (
    event_id     text PRIMARY KEY,
    alert_id     uuid NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    sequence     integer NOT NULL,
    symbol       text NOT NULL,
    condition    text NOT NULL,
    threshold    numeric NOT NULL,
    price        numeric NOT NULL,
    ts_event     bigint NOT NULL,
    triggered_at bigint NOT NULL,
    channels     text[] NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, triggered_at DESC);

-- The latest delivery outcome per (trigger, channel), from notifications.status.v1. No foreign
-- key to alert_events: a status may arrive before its trigger is recorded.
CREATE TABLE alert_deliveries (
    event_id   text NOT NULL,
    channel    text NOT NULL,
    alert_id   uuid NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    status     text NOT NULL,
    attempts   integer NOT NULL,
    detail     text NOT NULL DEFAULT '',
    ts         bigint NOT NULL,
    PRIMARY KEY (event_id, channel)
);
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);

-- Changes waiting for the relay: the full AlertState as JSON, or NULL for a tombstone.
CREATE TABLE alert_outbox (
    id         bigserial PRIMARY KEY,
    alert_id   uuid NOT NULL,
    symbol     text NOT NULL,
    version    bigint NOT NULL,
    payload    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX alert_outbox_pending ON alert_outbox (id) WHERE sent_at IS NULL;
CREATE INDEX alert_outbox_pending_alert ON alert_outbox (alert_id, id) WHERE sent_at IS NULL;
CREATE INDEX alert_outbox_sent ON alert_outbox (sent_at) WHERE sent_at IS NOT NULL;
