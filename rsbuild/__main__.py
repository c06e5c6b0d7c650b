"""`python -m rsbuild` runs the command line."""

from rsbuild.cli import app

app()
