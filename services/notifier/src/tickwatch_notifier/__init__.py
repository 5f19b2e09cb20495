"""Tickwatch notifier service."""
