"""Triton GPU backend."""
