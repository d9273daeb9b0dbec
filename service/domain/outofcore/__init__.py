"""EM and Lloyd over row chunks of a stored dataset (the algorithms, not the cluster)."""
