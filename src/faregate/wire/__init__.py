"""Wire schemas: the JSON shapes clients and upstreams speak, apart from any logic."""
