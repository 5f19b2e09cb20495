"""Users' price alerts: the rules of an alert (:mod:`.domain`), their store and outbox, the
relay to ``alerts.changes.v1`` and its reconcile with the tables, the trigger history and the
live push of triggers to their owner's WebSockets."""

from tickwatch_gateway.alerts.wiring import PRODUCED, install_alerts, register_alerts

__all__ = ["PRODUCED", "install_alerts", "register_alerts"]
