"""Test support: fixtures and helpers that start the real local environment."""
