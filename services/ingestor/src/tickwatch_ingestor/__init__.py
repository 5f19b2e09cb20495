"""Tickwatch ingestor service."""
