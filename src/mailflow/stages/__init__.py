"""Built-in chain stages, one module each, registered like any plugin."""
