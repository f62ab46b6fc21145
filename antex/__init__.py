"""Antex: a self-hosted, drop-in Anthropic-compatible API gateway with rolling credit windows."""

__version__ = "0.1.0"
