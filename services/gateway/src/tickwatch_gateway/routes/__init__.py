"""One module per resource; each has ``register(api)`` declaring its operations."""
