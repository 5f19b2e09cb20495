"""``python -m tickwatch_devstack.chaos [--short] [--seed N] [--keep]``: exit 1 when anything
was lost or duplicated beyond the sends in flight at a kill."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from tickwatch_devstack.chaos.plan import LONG, SHORT
from tickwatch_devstack.chaos.run import chaos
from tickwatch_devstack.chaos.tally import failures


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tickwatch_devstack.chaos")
    parser.add_argument("--short", action="store_true", help="one fault of each kind, < 4 min")
    parser.add_argument("--seed", type=int, default=9, help="names the run: faults, order, moments")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder even on a pass")
    args = parser.parse_args()
    # The run's own clients reconnect through every broker fault; their retries are not news.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    outcome = asyncio.run(chaos(SHORT if args.short else LONG, args.seed, keep=args.keep))
    return 1 if failures(outcome) else 0


if __name__ == "__main__":
    sys.exit(main())
