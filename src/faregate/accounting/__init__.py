"""Accounting: what a request cost, from prices and the usage the upstream reported."""
