"""Events: their models, the append-only log, JetStream publishing and consumers."""
