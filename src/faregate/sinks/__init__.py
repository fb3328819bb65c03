"""Async sinks: the request path hands them rows and returns; they write in batches."""
