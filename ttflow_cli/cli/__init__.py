"""Command-line interface: option parsing, console output and exit codes only."""
