"""The gateway's composition root: settings → app (resources in its cleanup contexts) → serve
it on ``GATEWAY_HOST:GATEWAY_PORT`` and its ops routes (``/metrics`` among them) on
``OPS_HOST:GATEWAY_OPS_PORT``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from tickwatch_common.logging import configure_logging
from tickwatch_common.runtime import run
from tickwatch_common.settings import load_settings

from tickwatch_gateway.app import SERVICE, build_app, build_ops_app
from tickwatch_gateway.http.middleware import PARSER_LINE_BYTES
from tickwatch_gateway.settings import Settings


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[web.AppRunner]:
    """The app serving on ``GATEWAY_HOST:GATEWAY_PORT``, its ops routes on
    ``OPS_HOST:GATEWAY_OPS_PORT``; stopped (bounded) on the way out."""
    app = build_app(settings)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=5, max_line_size=PARSER_LINE_BYTES
    )
    ops = web.AppRunner(build_ops_app(app), access_log=None)
    reuse_port = settings.gateway_reuse_port or None
    await ops.setup()
    try:
        await runner.setup()
        try:
            await web.TCPSite(
                ops, settings.ops_host, settings.gateway_ops_port, reuse_port=reuse_port
            ).start()
            await web.TCPSite(
                runner, settings.gateway_host, settings.gateway_port, reuse_port=reuse_port
            ).start()
            yield runner
        finally:
            await runner.cleanup()
    finally:
        await ops.cleanup()


async def main() -> None:
    settings = load_settings(Settings)
    configure_logging(SERVICE, settings.log_level)
    async with running_gateway(settings):
        await asyncio.Event().wait()


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
