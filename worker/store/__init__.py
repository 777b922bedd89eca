"""Persistence: the SQLite schema, the writer task, recovery and the offline check.

- `schema`: the one source of truth (migrations, `PRAGMA user_version`, reader recipes).
- `db`: openers: `open_writer` (WAL, busy_timeout, no autocheckpoint) and `connect_readonly` /
  `open_reader` (`mode=ro` + `query_only`) for the API and jobs.
- `records`: what the writer accepts; `writer.StoreWriter`: `submit()` from the hot path, `is_lagging`
  for the risk engine, `flush()` / `close()` on shutdown.
- `recovery`: what a restart rebuilds (positions from fills, open orders, breakers, operator actions) and
  `verify()` behind `python -m worker check`; `risk_cli`: `python -m worker risk reset`.
"""
