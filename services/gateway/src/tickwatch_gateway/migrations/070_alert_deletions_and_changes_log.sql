-- What the reconcile of alerts.changes.v1 needs besides the alerts themselves (alerts_reconcile.py):
-- which alerts were deleted (to send a tombstone for one the topic still holds, long after the
-- outbox row is purged), and which log the relay last published to (a new one means the topic
-- must be rebuilt from these tables).

CREATE TABLE alert_deletions (
    alert_id   uuid PRIMARY KEY,
    symbol     text NOT NULL,
    version    bigint NOT NULL,  -- the version of the tombstone
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- Deletions from before this table, as far as the outbox still remembers them.
INSERT INTO alert_deletions (alert_id, symbol, version)
SELECT DISTINCT ON (o.alert_id) o.alert_id, o.symbol, o.version
FROM alert_outbox o
WHERE o.payload IS NULL AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = o.alert_id)
ORDER BY o.alert_id, o.id DESC;

-- One row per topic: the log (cluster id, topic id) the relay has published to and reconciled.
CREATE TABLE changes_log (
    topic         text PRIMARY KEY,
    cluster_id    text NOT NULL,
    topic_id      text NOT NULL,
    reconciled_at timestamptz NOT NULL DEFAULT now()
);
