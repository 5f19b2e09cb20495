"""Tickwatch shared library."""
