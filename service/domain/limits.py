"""The sizes the domain refuses past, as plain values.

The domain never reads the app's ``Settings``: whoever builds the services
(``service.services``) copies these from it, so the domain can be used and tested with
any numbers and without pydantic-settings or the environment. The field names are the
``Settings`` fields they come from, which is also why the error messages can name the
``GMM_*`` variable that raises each limit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Each one turns an absurd request into a 413/422 before any work starts."""

    max_points: int
    """Most rows (samples) in one request's data."""
    max_features: int
    """Most columns (features) per row."""
    max_values: int
    """Most numbers (rows x features) in one request's data."""
    max_components: int
    """Largest ``n_components`` / ``n_clusters``."""
    max_model_parameters: int
    """Most numbers in a fitted model's weights, means and covariances."""
    max_iter: int
    """Largest ``max_iter``."""
    max_n_init: int
    """Largest ``n_init``."""
    max_grid_cells: int
    """Most cells (fits) in one model-selection grid."""
    max_parallel_fits: int
    """Fits one model-selection or comparison request runs at once."""
    max_default_per_point_values: int
    """Most numbers the training points' per-point arrays may hold when a fit request
    does not name them in ``include``; past it they are omitted from the answer."""
