"""Corral: end server sprawl."""
