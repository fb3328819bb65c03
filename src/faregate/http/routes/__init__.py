"""One module per API surface; each only parses, runs the pipeline and serializes."""
