"""The paper portfolio, as the public API serves it: routes that check the caller and forward
each call, signed for that user, to the portfolio service."""

from tickwatch_gateway.portfolio.wiring import install_portfolio, register_portfolio

__all__ = ["install_portfolio", "register_portfolio"]
