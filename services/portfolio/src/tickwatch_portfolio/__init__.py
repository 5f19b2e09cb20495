"""Tickwatch portfolio service."""
