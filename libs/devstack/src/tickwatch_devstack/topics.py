"""``python -m tickwatch_devstack.topics``: create every contract topic on KAFKA_BOOTSTRAP_SERVERS."""

from __future__ import annotations

import asyncio
import os
import sys

from tickwatch_devstack.provision import create_topics


def main() -> int:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        print("topics: missing required setting KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    created = asyncio.run(create_topics(servers))
    print(f"topics: created {', '.join(created) or 'none (all existed)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
