"""The runner: configuration, connections, orchestration and the `ecom` CLI."""
