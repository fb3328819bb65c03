"""The request log: per request a row beside the ledger's (trace id, sizes, outcome) and, by
policy, the request and response bodies with PII redacted before storage. See
docs/observability.md (the request log); `service.request_log(config, …)` builds it."""
