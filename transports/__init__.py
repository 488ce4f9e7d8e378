"""Built-in transports (listeners) and protocol engines, registered as plugins."""
