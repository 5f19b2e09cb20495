"""Local infrastructure for development and tests."""
