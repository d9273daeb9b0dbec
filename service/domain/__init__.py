"""Use cases and numerics; knows nothing of HTTP."""
