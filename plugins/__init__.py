"""Built-in plugins: exchange types, dispatch policies and the memory store.

Each module is an ordinary plugin, registered through the ``warrenmq`` entry-point group
exactly as a third-party plugin would be.
"""
