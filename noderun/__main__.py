"""`python -m noderun ...`: the `noderun` command, for where its console script is not on PATH."""

from noderun.cli import main

main()
