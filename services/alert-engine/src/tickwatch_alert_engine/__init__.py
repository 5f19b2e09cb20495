"""Tickwatch alert-engine service."""
