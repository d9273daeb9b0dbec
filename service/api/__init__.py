"""HTTP layer: routes, dependencies, middleware and the problem+json mapping."""
