"""Answering with a stored model: compiled predictors, their cache, predict, score and sample."""
