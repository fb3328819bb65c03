"""The web dashboard at /ui: one page drawing spend, cache savings, traffic, latency, breakers and
a request explorer from the ledger (`routes.py`: pages, login, data endpoints; `session.py`:
cookies and CSRF; `queries.py` + `histogram.py`: the SQL; `static/`: the page, script, styles).
See docs/observability.md (the dashboard)."""
