"""The request's own types: the Call that flows through the pipeline and the errors it can end in."""
