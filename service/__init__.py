"""gmm-service: scikit-learn's Gaussian mixtures and k-means over HTTP."""

__version__ = "0.1.0"
