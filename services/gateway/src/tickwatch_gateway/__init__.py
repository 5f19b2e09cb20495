"""Tickwatch gateway service."""
