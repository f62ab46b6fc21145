#!/usr/bin/env python3
"""Run the Antex CLI from a git checkout without installing: `python antex.py serve`.

Never imported: next to the `antex/` package, `import antex` finds the package, not this file.
"""
from antex.cli import cli

if __name__ == "__main__":
    cli()
