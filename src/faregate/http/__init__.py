"""The HTTP layer: parses requests, hands a `Call` to the pipeline, serializes the result."""
