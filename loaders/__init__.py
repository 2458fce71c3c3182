"""The code that moves rows: generate, stream, archive, export."""
