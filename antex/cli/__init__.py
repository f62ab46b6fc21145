"""The `antex` command (click): one module per noun, all registered on the `cli` group in base.py."""
from antex.cli.base import cli
from antex.cli import catalog, keys, server, usage  # noqa: F401  (each registers its commands on cli)

__all__ = ["cli"]
