"""Command-line entry points: the only part of ``linkstack`` that reads argv, stdin and stdout."""
