"""``python -m tickwatch_devstack up|down|init``: what ``make run`` and ``make down`` call.

- ``up``: start the servers not named by the environment (under ``.data/``), create the topics,
  apply the migrations, start the five services, print the URLs, supervise until Ctrl-C.
- ``down``: stop everything ``up`` started, also after ``up`` crashed or was killed.
- ``status``: what a running ``up`` supervises: each service's state and restart count (exit
  code 0 when all are ready, 3 when one is not, 1 when ``up`` is not running).
- ``reconcile``: ask the running gateway to republish what ``alerts.changes.v1`` lacks from its
  tables (``POST /ops/reconcile``), and print its counts.
- ``seed``: demo users, alerts and portfolios through the running gateway's public API
  (:mod:`tickwatch_devstack.seed`); running it again changes nothing.
- ``init``: only create the topics and apply the migrations on the servers the environment names
  (the one-shot ``init`` container of ``docker-compose.yml``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from tickwatch_devstack.infra import InfraError
from tickwatch_devstack.services import SERVICES
from tickwatch_devstack.supervision import RestartPolicy
from tickwatch_devstack.supervisor import (
    InfraPorts,
    Refused,
    WatchSettings,
    down,
    refuse,
    status,
    up,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tickwatch_devstack", description=__doc__)
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the checkout (default: .)")
    parser.add_argument("--data", type=Path, help="the data folder (default: <repo>/.data)")
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="start everything and supervise until Ctrl-C")
    defaults = InfraPorts()
    up_cmd.add_argument("--kafka-port", type=int, default=defaults.kafka)
    up_cmd.add_argument("--postgres-port", type=int, default=defaults.postgres)
    up_cmd.add_argument("--redis-port", type=int, default=defaults.redis)
    up_cmd.add_argument("--smtp-port", type=int, default=defaults.smtp)
    up_cmd.add_argument("--mail-http-port", type=int, default=defaults.mail_http)
    up_cmd.add_argument(
        "--services",
        default=",".join(SERVICES),
        help="comma-separated subset of the services to start (default: all five)",
    )
    up_cmd.add_argument("--ready-timeout", type=float, default=120, help="seconds (default 120)")
    watch, policy = WatchSettings(), RestartPolicy()
    for flag, default, what in (
        ("--restart-initial", policy.initial_s, "first wait before restarting a dead service"),
        ("--restart-cap", policy.cap_s, "longest wait between restarts (doubling up to it)"),
        ("--restart-stable", policy.stable_s, "a run this long resets the backoff"),
        ("--ready-poll", watch.ready_poll_s, "how often each service's /ready is polled"),
    ):
        up_cmd.add_argument(
            flag, type=float, default=default, help=f"{what}, s (default {default:g})"
        )
    commands.add_parser("down", help="stop everything `up` started")
    commands.add_parser("status", help="each supervised service's state and restart count")
    commands.add_parser("init", help="create topics and apply migrations on the named servers")
    reconcile_cmd = commands.add_parser(
        "reconcile", help="the gateway republishes what alerts.changes.v1 lacks from its tables"
    )
    reconcile_cmd.add_argument("--url", help="the gateway (default: http://127.0.0.1:GATEWAY_PORT)")
    seed_cmd = commands.add_parser(
        "seed", help="demo users, alerts and portfolios on the running system (idempotent)"
    )
    seed_cmd.add_argument("--url", help="the gateway (default: http://127.0.0.1:GATEWAY_PORT)")
    seed_cmd.add_argument(
        "--webhook-url",
        default=f"http://127.0.0.1:{defaults.mail_http}/webhooks/demo",
        help="where the demo webhook alert calls (default: the mail page's webhook catcher)",
    )
    args = parser.parse_args(argv)

    if args.command == "down":
        return down(args.repo, data=args.data)
    if args.command == "init":
        return init()
    if args.command == "reconcile":
        from tickwatch_devstack.reconcile import reconcile

        return reconcile(args.repo, data=args.data, url=args.url)
    if args.command == "seed":
        from tickwatch_devstack.seed import seed
        from tickwatch_devstack.supervisor import load_environment

        _, seen = load_environment(args.repo)
        url = args.url or f"http://127.0.0.1:{seen.get('GATEWAY_PORT') or 8080}"
        return seed(url, args.webhook_url, sys.stdout)
    if args.command == "status":
        return status(args.repo, data=args.data)
    services = tuple(s.strip() for s in args.services.split(",") if s.strip())
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    try:
        return up(
            args.repo,
            data=args.data,
            ports=InfraPorts(
                args.kafka_port,
                args.postgres_port,
                args.redis_port,
                args.smtp_port,
                args.mail_http_port,
            ),
            services=services,
            ready_timeout_s=args.ready_timeout,
            watch=WatchSettings(
                RestartPolicy(args.restart_initial, args.restart_cap, args.restart_stable),
                ready_poll_s=args.ready_poll,
            ),
        )
    except (Refused, InfraError) as exc:
        return refuse(exc)


def init() -> int:
    from tickwatch_common.settings import KafkaSettings, load_settings

    from tickwatch_devstack.provision import create_topics, migrate_all

    missing = [v for v in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL") if not os.environ.get(v)]
    if missing:
        print(f"devstack init: missing required setting {', '.join(missing)}", file=sys.stderr)
        return 2
    # The Kafka settings whole: in prod the Job logs in as tickwatch-init (SASL, bus_access).
    kafka = load_settings(KafkaSettings)
    created = asyncio.run(create_topics(kafka))
    print(f"devstack init: topics created: {', '.join(created) or 'none (all existed)'}")
    failed = False
    for outcome in asyncio.run(migrate_all(os.environ["DATABASE_URL"])):
        if outcome.error:
            failed = True
            print(f"devstack init: migrations of {outcome.service} FAILED: {outcome.error}")
        else:
            print(f"devstack init: {outcome.service}: applied {outcome.applied or 'nothing new'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
