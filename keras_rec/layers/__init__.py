"""Custom layers, one per file."""

__all__: list[str] = []
