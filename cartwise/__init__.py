"""The `cartwise` command: one entry point for the project's programs (see cartwise.cli)."""
