"""Python client for gmm-service.

    from gmm_client import Client
    with Client("http://127.0.0.1:8000") as gmm:
        model = gmm.create_model("gaussian_mixture", X, {"n_components": 4})
        labels = gmm.predict(model["id"], X)["labels"]

``gmm_client.sklearn`` has scikit-learn estimators that fit and predict on the
service (``pip install 'gmm-client[sklearn]'``); ``gmm`` is the command line
(``pip install 'gmm-client[cli]'``).
"""

from gmm_client.client import OPERATIONS, AsyncClient, Client, Dataset
from gmm_client.errors import (
    BadRequest,
    Busy,
    GMMError,
    InvalidInput,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ServerError,
    Unauthorized,
    UnsupportedMediaType,
)

__version__ = "0.1.0"

__all__ = [
    "OPERATIONS",
    "AsyncClient",
    "BadRequest",
    "Busy",
    "Client",
    "Dataset",
    "GMMError",
    "InvalidInput",
    "JobFailed",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "ServerError",
    "Unauthorized",
    "UnsupportedMediaType",
]
