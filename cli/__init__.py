"""The `dha` command line: Typer commands that parse, call dha_pipeline, and render with rich."""
