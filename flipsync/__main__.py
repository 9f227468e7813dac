"""`python -m flipsync` runs the CLI."""

from flipsync.cli import main

main()
