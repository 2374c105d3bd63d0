"""One module per stack; each runs as ``python -m bench.stacks.<name> server|client ...``."""
