"""Counting a chaos run: what arrived against what was owed, the verdict and the printed table.

Plain data in, plain data out, so the rules of the verdict are tested without servers: a
firing with no trigger, e-mail or webhook call is lost; one that nobody owed is unexpected; a
second copy is allowed only for a send that was in flight at a ``kill -9`` of the notifier
(observed in its delivery log), only once, and only with the first copy's id.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from tickwatch_common.events.alerts import ChannelName as Channel

from tickwatch_devstack.chaos.oracle import Firing


@dataclass(frozen=True)
class Delivery:
    """One e-mail or webhook call as the receiver accepted it."""

    channel: Channel
    alert_id: str
    price: Decimal
    event_id: str
    ident: str  # the Message-ID of an e-mail, the X-Tickwatch-Event-Id header of a webhook call

    @property
    def firing(self) -> Firing:
        return Firing(self.alert_id, self.price)


@dataclass(frozen=True)
class Duplicate:
    firing: Firing
    channel: Channel
    copies: int
    same_id: bool
    allowed: bool  # in flight at a notifier kill, one extra copy, same id


@dataclass(frozen=True)
class ChannelCount:
    channel: Channel
    expected: int
    delivered: int
    lost: list[Firing]
    unexpected: list[Firing]
    duplicates: list[Duplicate]

    @property
    def extra_copies(self) -> int:
        return sum(d.copies - 1 for d in self.duplicates)


@dataclass(frozen=True)
class TriggerRecord:
    event_id: str
    alert_id: str
    sequence: int
    price: Decimal


@dataclass(frozen=True)
class TriggerCount:
    expected: int
    distinct: int
    records: int
    lost: list[Firing]
    unexpected: list[Firing]
    renamed: list[Firing]  # one firing under two event ids: the engine fired it twice


@dataclass
class Heal:
    """One fault and how long the system took to get over it (None: not within the bound)."""

    label: str
    at_s: float
    ready_s: float | None = None
    caught_up_s: float | None = None
    in_flight: int | None = None  # notifier kills: sends in flight at the kill
    unready: str = ""  # who was still unready when the wait gave up
    unready_during: str = ""  # who answered /ready with anything but 200 while the fault lasted


@dataclass
class Outcome:
    plan: str
    seed: int
    elapsed_s: float = 0.0
    ticks: int = 0
    triggers: TriggerCount | None = None
    channels: list[ChannelCount] = field(default_factory=list)
    history_mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)
    history_checked: int = 0
    dlq: dict[str, int] = field(default_factory=dict)
    heals: list[Heal] = field(default_factory=list)
    in_flight_total: int = 0
    problems: list[str] = field(default_factory=list)  # what stopped the run, if anything
    notes: list[str] = field(default_factory=list)  # findings that are not losses, e.g. crashes


def count_channel(
    channel: Channel,
    expected: list[Firing],
    deliveries: list[Delivery],
    in_flight: set[tuple[str, str]],
) -> ChannelCount:
    """``in_flight``: ``(event_id, channel)`` of every send in flight at a notifier kill."""
    owed = set(expected)
    mine = [d for d in deliveries if d.channel == channel]
    copies: dict[Firing, list[Delivery]] = defaultdict(list)
    for d in mine:
        copies[d.firing].append(d)
    duplicates = []
    for firing, seen in copies.items():
        if len(seen) < 2:
            continue
        same_id = len({d.ident for d in seen}) == 1
        allowed = same_id and len(seen) == 2 and (seen[0].event_id, channel) in in_flight
        duplicates.append(Duplicate(firing, channel, len(seen), same_id, allowed))
    return ChannelCount(
        channel=channel,
        expected=len(owed),
        delivered=len(owed & copies.keys()),
        lost=sorted(owed - copies.keys(), key=_order),
        unexpected=sorted(copies.keys() - owed, key=_order),
        duplicates=duplicates,
    )


def count_triggers(expected: list[Firing], records: list[TriggerRecord]) -> TriggerCount:
    owed = set(expected)
    ids: dict[Firing, set[str]] = defaultdict(set)
    for r in records:
        ids[Firing(r.alert_id, r.price)].add(r.event_id)
    return TriggerCount(
        expected=len(owed),
        distinct=len({r.event_id for r in records}),
        records=len(records),
        lost=sorted(owed - ids.keys(), key=_order),
        unexpected=sorted(ids.keys() - owed, key=_order),
        renamed=sorted((f for f, e in ids.items() if len(e) > 1), key=_order),
    )


def history_mismatches(
    owed: dict[str, int], recorded: dict[str, int]
) -> dict[str, tuple[int, int]]:
    """Alerts whose history at the gateway does not hold as many events as they fired."""
    return {a: (n, recorded.get(a, 0)) for a, n in owed.items() if recorded.get(a, 0) != n}


def failures(outcome: Outcome) -> list[str]:
    """Why the run fails; empty when nothing was lost, unexpected or duplicated beyond the bound."""
    found = list(outcome.problems)
    t = outcome.triggers
    if t is None:
        found.append("triggers were not counted")
    else:
        if t.lost:
            found.append(f"{len(t.lost)} firings never reached alerts.triggered.v1")
        if t.unexpected:
            found.append(f"{len(t.unexpected)} triggers nobody owed")
        if t.renamed:
            found.append(f"{len(t.renamed)} firings triggered under two event ids")
    for c in outcome.channels:
        if c.lost:
            found.append(f"{len(c.lost)} firings without {c.channel}")
        if c.unexpected:
            found.append(f"{len(c.unexpected)} {c.channel} sends nobody owed")
        beyond = [d for d in c.duplicates if not d.allowed]
        if beyond:
            found.append(
                f"{len(beyond)} {c.channel} duplicates beyond the sends in flight at a kill"
            )
        if any(not d.same_id for d in c.duplicates):
            found.append(f"{c.channel} duplicates with a different id than the first copy")
    if outcome.history_mismatches:
        found.append(f"{len(outcome.history_mismatches)} alerts whose history is off")
    if outcome.dlq:
        found.append(f"{sum(outcome.dlq.values())} dead-lettered records")
    return found


def render(outcome: Outcome) -> str:
    """The figures as a table, then the verdict."""
    lines = [
        f"chaos run '{outcome.plan}', seed {outcome.seed}: {outcome.elapsed_s:.0f} s, "
        f"{outcome.ticks} ticks published",
        "",
        f"{'':<28}{'expected':>10}{'got':>10}{'lost':>8}{'unexp.':>8}{'dup.':>8}{'dup. ok':>9}",
    ]
    t = outcome.triggers
    if t is not None:
        lines.append(
            f"{'triggers (distinct ids)':<28}{t.expected:>10}{t.distinct:>10}{len(t.lost):>8}"
            f"{len(t.unexpected):>8}{len(t.renamed):>8}{'-':>9}"
        )
        lines.append(f"{'  records on the topic':<28}{'':>10}{t.records:>10}")
    for c in outcome.channels:
        ok = sum(1 for d in c.duplicates if d.allowed)
        lines.append(
            f"{c.channel + ' (per firing)':<28}{c.expected:>10}{c.delivered:>10}{len(c.lost):>8}"
            f"{len(c.unexpected):>8}{len(c.duplicates):>8}{ok:>9}"
        )
    if outcome.history_checked:
        lines.append(
            f"{'gateway history (alerts)':<28}{outcome.history_checked:>10}"
            f"{outcome.history_checked - len(outcome.history_mismatches):>10}"
            f"{len(outcome.history_mismatches):>8}"
        )
    else:
        lines.append(f"{'gateway history (alerts)':<28}{'not counted':>20}")
    lines.append(f"sends in flight at notifier kills: {outcome.in_flight_total}")
    lines.append(
        "dead letters: " + (", ".join(f"{k} {v}" for k, v in sorted(outcome.dlq.items())) or "none")
    )
    lines += [
        "",
        f"{'fault':<28}{'at s':>8}{'ready s':>9}{'caught up s':>13}{'in flight':>11}"
        "   unready during the fault",
    ]
    for h in outcome.heals:
        lines.append(
            f"{h.label:<28}{h.at_s:>8.1f}{_s(h.ready_s):>9}{_s(h.caught_up_s):>13}"
            f"{'' if h.in_flight is None else h.in_flight:>11}   {h.unready_during or 'none'}"
            + (f"; still unready: {h.unready}" if h.unready else "")
        )
    for c in outcome.channels:
        for d in c.duplicates[:5]:
            lines.append(
                f"  duplicate {c.channel}: alert {d.firing.alert_id} at {d.firing.price}, "
                f"{d.copies} copies, {'same id' if d.same_id else 'DIFFERENT ids'}, "
                f"{'in flight at a kill' if d.allowed else 'NOT in flight at a kill'}"
            )
    lines += [f"note: {n}" for n in outcome.notes]
    broken = failures(outcome)
    lines.append("")
    lines.append(
        "FAIL: " + "; ".join(broken)
        if broken
        else "PASS: 0 lost, 0 unexpected, no duplicate beyond the sends in flight at each kill"
    )
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _order(f: Firing) -> tuple[str, Decimal]:
    return (f.alert_id, f.price)


def per_alert(expected: list[Firing]) -> dict[str, int]:
    return dict(Counter(f.alert_id for f in expected))
