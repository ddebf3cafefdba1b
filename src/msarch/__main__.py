"""`python -m msarch`: the same as the `msarch` command."""

from msarch.cli import main

main()
