"""Routing: deployments, model groups and how one deployment is picked for a call."""
