"""``make chaos``: a reproducible fault run of the whole system on a real Apache Kafka broker.

Why: "exactly once in effect" (docs/DESIGN.md §4) is a claim about crashes, and only a run that
crashes things can back it. This one starts everything it needs in a temporary folder (Apache
Kafka in KRaft mode with a data directory that survives a restart, PostgreSQL, Redis), its own
SMTP server and webhook receiver (both in this process, both counting what they accept), and the
five services as processes. It seeds users and recurring ``crosses_up`` alerts (e-mail and
webhook) through the gateway's public API and publishes a deterministic tick stream itself.

The oracle is exact because the stream is simple: every symbol alternates between a low level
(100) and a high level (200 plus the swing number in ten-thousandths, so each swing's price is
unique), every threshold lies between the two, and a swing's period is longer than the alerts'
cooldown. Each up-swing therefore fires every alert of its symbol once, and every trigger,
e-mail and webhook call carries the price that names its swing. The expected firings are
computed from the ticks the broker acknowledged (:mod:`.oracle`, the alert semantics as plain
code), so a tick stream held up by a broker outage changes what is expected, not the verdict.

Faults come one at a time, in a seeded order with seeded pauses between them: ``kill -9`` of
each service and an immediate restart, ``kill -9`` of the broker and a restart on the same data,
a restart of PostgreSQL, Redis stopped for a while, the SMTP server answering ``451`` for a
while. After each, the run records the time until every ``/ready`` answers 200 again and the time
until every firing expected so far has its e-mail and webhook call (caught up).

At the end, after the tick stream stops and the notifier's delivery log is quiet (waited for with
a deadline), it counts: expected firings against the distinct triggers on
``alerts.triggered.v1`` and against the gateway's per-alert history; e-mails and webhook calls per
firing; duplicates, each with whether it carries the first copy's Message-ID or event id;
entries on every dead-letter topic. The bound on duplicates is observed, not assumed: right
after each ``kill -9`` of the notifier (before its restart) the run reads the notifier's delivery
rows in state ``sending``, which are exactly the sends in flight at that instant; a duplicate is
allowed only for one of those, once. It prints a table and exits 1 when anything is lost,
fired unexpectedly, or duplicated beyond that bound, 0 otherwise. A global deadline (15 min
for ``make chaos``) ends the run in any case, with the figures gathered so far.

``python -m tickwatch_devstack.chaos [--short] [--seed N]``; ``--short`` (one fault of each kind,
a few hundred triggers, shorter windows, under 4 minutes) is what ``tests/e2e/test_chaos_short.py``
runs inside ``make test``.
"""
