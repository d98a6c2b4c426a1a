"""One module per command group; ``cli/main.py`` assembles them into the typer app."""
