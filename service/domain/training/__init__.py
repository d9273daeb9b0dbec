"""Fitting: parameters checked, estimators fitted with progress and warnings, results described."""
