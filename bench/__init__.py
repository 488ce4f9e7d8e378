"""AMQP 0-9-1 load generator for warrenmq (or any AMQP broker): ``python -m bench --help``."""
