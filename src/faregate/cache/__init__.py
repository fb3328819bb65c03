"""Response caching (issue 5): an exact layer and a semantic layer, scoped per tenant.

    keys.py      what makes two requests the same (exact key) or comparable (semantic partition)
    policy.py    per model group settings and the per-request directives (cache-control, x-faregate-cache)
    store.py     exact entries: in-process LRU with TTL and a byte bound, or Redis
    embedder.py  all-MiniLM-L6-v2 (int8 ONNX) run locally, files checked by sha256
    index.py     one partition's vectors; exact numpy search
    verify.py    the same-intent check a semantic candidate must pass beyond cosine
    semantic.py  the semantic layer: partitions, entries, Redis sync between replicas
    replay.py    a cached response replayed as a stream
The pipeline stage is stages/cache.py.
"""
