"""QuantumFlow's read-only HTTP API: `python -m api --db PATH --port N` (see `api.app`)."""
