-- One row per (trigger, channel): the delivery log that makes each delivery happen once.
-- status: pending -> sending -> sent | retrying (-> sending ...) | failed
-- published: the last status published to notifications.status.v1 (an outbox for outcomes).
CREATE TABLE delivery (
    event_id        text NOT NULL,
    channel         text NOT NULL,
    alert_id        text NOT NULL,
    user_id         text NOT NULL,
    trigger         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'retrying', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    detail          text NOT NULL DEFAULT '',
    published       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, channel)
);
CREATE INDEX delivery_due ON delivery (next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'sending');
CREATE INDEX delivery_unpublished ON delivery (updated_at)
    WHERE status IN ('retrying', 'sent', 'failed') AND published IS DISTINCT FROM status;
