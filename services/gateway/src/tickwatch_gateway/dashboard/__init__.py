"""The web dashboard at ``/``: one self-contained page served from package data."""

from tickwatch_gateway.dashboard.routes import add_routes as install_dashboard

__all__ = ["install_dashboard"]
