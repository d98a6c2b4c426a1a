"""``python -m certreconcile``: the same as the ``certreconcile`` command."""

from certreconcile.cli.main import main

main()
