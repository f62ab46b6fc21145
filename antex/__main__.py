from antex.cli import cli

cli()
