"""The edge's settings: public and ops listen addresses, body limit, CORS, rate-limit budgets."""

from __future__ import annotations

from pydantic import Field

from tickwatch_gateway.runtime.settings import RuntimeSettings


class HttpSettings(RuntimeSettings):
    gateway_host: str = Field(default="0.0.0.0", description="Listen address of the public API")
    gateway_port: int = 8080
    gateway_ops_port: int = Field(
        default=8085,
        description="Port of the ops listener on OPS_HOST: /health, /ready and /metrics (the"
        " public port answers /health and /ready, and 404 for /metrics)",
    )
    gateway_reuse_port: bool = Field(
        default=False,
        description="Let several gateway processes share the port and the ops port (SO_REUSEPORT),"
        " the kernel spreading connections over them: how one host uses all its cores for"
        " WebSocket fan-out",
    )
    max_body_bytes: int = 64 * 1024
    cors_origins: str = Field(default="", description="Comma-separated origins, or *")
    rate_limit_default: str = "600/minute"
    rate_limit_auth: str = "10/minute"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
