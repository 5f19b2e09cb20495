"""What a chaos run does, as plain data: its sizes, its tick levels, its faults and their order.

Everything random here comes from one seeded ``random.Random``, so a seed names a run: the same
seed gives the same faults, in the same order, at the same offsets, and the same tick levels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from tickwatch_devstack.services import SERVICES

FaultKind = Literal["kill", "broker", "postgres", "redis", "smtp"]

LOW = Decimal(100)
HIGH = Decimal(200)
SWING_STEP = Decimal("0.0001")  # each swing's high price is unique: HIGH + swing * step


@dataclass(frozen=True)
class Fault:
    """One fault: what, after how long a pause, for how long (0: restart at once). A kill
    lands ``into_burst_s`` after the next swing fires, inside the burst of sends it starts."""

    kind: FaultKind
    target: str
    pause_s: float
    duration_s: float = 0.0
    into_burst_s: float = 0.0

    @property
    def label(self) -> str:
        return {
            "kill": f"kill -9 {self.target}",
            "broker": "kill -9 broker, restart",
            "postgres": "restart PostgreSQL",
            "redis": f"Redis down {self.duration_s:.0f} s",
            "smtp": f"SMTP 451 for {self.duration_s:.0f} s",
        }[self.kind]


@dataclass(frozen=True)
class Plan:
    """The sizes and windows of a run; :data:`LONG` is ``make chaos``, :data:`SHORT` the test."""

    name: str
    symbols: int
    alerts_per_symbol: int
    users: int
    cooldown_s: int
    period_s: float  # one swing of a symbol: low, then high, then low again
    tick_interval_s: float  # each symbol ticks this often at its current level
    kills: tuple[str, ...]  # services killed with kill -9, in a seeded order
    redis_down_s: float
    smtp_fail_s: float
    pause_s: tuple[float, float]  # seeded pause before each fault, within these bounds
    heal_timeout_s: float  # longest wait for a fault to heal before the next one
    drain_timeout_s: float  # longest wait at the end for the last deliveries
    deadline_s: float  # the whole run, whatever happens
    count_reserve_s: float  # of the deadline, kept for counting whatever happened before it
    notifier_lease_s: int

    @property
    def alerts(self) -> int:
        return self.symbols * self.alerts_per_symbol

    def symbol(self, index: int) -> str:
        return f"CHAOS{index}-USDT"

    def threshold(self, index: int) -> Decimal:
        """Thresholds spread between the levels (110.00, 110.01, ...): all of them straddled."""
        return Decimal(110) + Decimal(index) * Decimal("0.01")

    def faults(self, seed: int) -> list[Fault]:
        """Every fault once, in a seeded order, each after a seeded pause."""
        rng = random.Random(seed)
        faults: list[Fault] = [Fault("kill", s, 0.0) for s in self.kills]
        faults += [
            Fault("broker", "kafka", 0.0),
            Fault("postgres", "postgres", 0.0),
            Fault("redis", "redis", 0.0, self.redis_down_s),
            Fault("smtp", "smtp", 0.0, self.smtp_fail_s),
        ]
        rng.shuffle(faults)
        low, high = self.pause_s
        return [
            Fault(
                f.kind,
                f.target,
                round(rng.uniform(low, high), 2),
                f.duration_s,
                round(rng.uniform(0.0, 0.8), 3) if f.kind == "kill" else 0.0,
            )
            for f in faults
        ]

    def phases(self, seed: int) -> list[float]:
        """Each symbol's offset into its period, spread evenly and jittered: a steady load."""
        rng = random.Random(seed + 1)
        step = self.period_s / self.symbols
        return [round(i * step + rng.uniform(0, step / 2), 3) for i in range(self.symbols)]


def level(period_s: float, phase_s: float, elapsed_s: float) -> Decimal:
    """The price of a symbol ``elapsed_s`` into the stream: LOW for the first half of each
    period, then HIGH plus the swing's number (1, 2, ...) in ten-thousandths."""
    t = elapsed_s - phase_s
    if t < 0:
        return LOW
    swing, into = divmod(t, period_s)
    if into < period_s / 2:
        return LOW
    return HIGH + (int(swing) + 1) * SWING_STEP


LONG = Plan(
    name="long",
    symbols=10,
    alerts_per_symbol=200,  # 2,000 alerts, 20 users at the gateway's default cap of 100
    users=20,
    cooldown_s=10,
    # 2 x 2,000 sends per swing of all symbols: at 60 s that offered 67 sends/s, more than the
    # notifier delivered here (about 31/s on 2 busy cores), and the run measured its backlog.
    period_s=180.0,
    tick_interval_s=0.5,
    kills=SERVICES,
    redis_down_s=30.0,
    smtp_fail_s=60.0,
    pause_s=(15.0, 40.0),
    heal_timeout_s=150.0,
    drain_timeout_s=200.0,
    deadline_s=14.5 * 60,
    count_reserve_s=60.0,
    notifier_lease_s=20,
)

SHORT = Plan(
    name="short",
    symbols=3,
    alerts_per_symbol=10,
    users=3,
    cooldown_s=2,
    period_s=8.0,
    tick_interval_s=0.5,
    kills=("notifier", "alert-engine"),
    redis_down_s=8.0,
    smtp_fail_s=12.0,
    pause_s=(3.0, 6.0),
    heal_timeout_s=45.0,
    drain_timeout_s=60.0,
    deadline_s=300.0,  # a bound for a busy host; about 2.5 min when the host is quiet
    count_reserve_s=40.0,
    notifier_lease_s=8,
)
