"""Typed settings: every knob of the service, read once from ``GMM_*`` variables.

Nothing else in the package reads ``os.environ``; tests build their own
``Settings`` and hand it to ``create_app``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration; each field maps to ``GMM_<FIELD>``."""

    # An empty variable means unset: compose writes `GMM_X=` for every setting it
    # forwards, and "" is not a valid timeout, nor a useful keys file (Path("") is ".").
    model_config = SettingsConfigDict(
        env_prefix="GMM_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    host: str = Field("127.0.0.1", description="Interface uvicorn binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port uvicorn listens on.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    grpc_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=(
            "TCP port (on host) of the Open Inference Protocol over gRPC, "
            "`inference.GRPCInferenceService` (needs the `grpc` extra). Every worker "
            "listens on it (SO_REUSEPORT: the kernel spreads connections). Messages are "
            "bounded by max_body_bytes, calls at once per worker by max_connections, "
            "idle connections by timeout_keep_alive. Unset: no gRPC."
        ),
    )
    log_level: str = Field("info", description="uvicorn log level.")
    timeout_keep_alive: int = Field(
        75,
        ge=1,
        description=(
            "Seconds uvicorn keeps an idle connection open. Above common clients' own "
            "idle limits (httpx: 5 s), so a client never reuses a connection the server "
            "is closing."
        ),
    )

    request_read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description=(
            "Longest a client may take to send a request's headers (from connecting, or "
            "from the first byte of a request on a kept-alive connection): past it the "
            "connection is closed. Also the longest pause while it sends a body: past it "
            "the request is answered 408 `request-timeout` and the connection closed; and "
            "the longest the rest of a body answered before it ended (a 401) may take. "
            "The deadlines on headers and on such a rest hold under `python -m service` "
            "(not under the uvicorn command, which has none)."
        ),
    )
    request_min_bytes_per_second: int = Field(
        1024,
        ge=0,
        description=(
            "Slowest a request body may arrive on average, in bytes per second, after a "
            "grace of request_read_timeout_seconds: a body that falls further behind is "
            "answered 408 `request-timeout`, so that a byte every few seconds cannot hold "
            "a connection open. 0: only pauses are limited."
        ),
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description=(
            "Connections each worker serves at once (uvicorn's limit_concurrency; also "
            "the most requests it runs at once). A request on one more connection is "
            "answered 503 `too-many-connections` with Retry-After, and that connection "
            "closed."
        ),
    )

    store_dir: Path = Field(
        Path("gmm-store"),
        description="Embedded local model store; created on first start if missing.",
    )
    store_url: str | None = Field(
        None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
        description=(
            "`s3://bucket/prefix`: keep the artifacts of models and datasets in an "
            "S3-compatible bucket (needs the `s3` extra) that several replicas share, "
            "instead of store_dir; replicas then also share database_url. Needs "
            "secret_key. Region and credentials come the usual AWS way (AWS_* variables, "
            "shared config, instance role). Unset: the local store."
        ),
    )
    store_max_bytes: int | None = Field(
        None,
        ge=0,
        description=(
            "Quota of the store: the bytes of models' artifacts and datasets' points "
            "together. A write that would pass it answers 507 problem+json; reads, "
            "predictions and deletes go on. Unset: no quota."
        ),
    )
    store_min_free_bytes: int = Field(
        50_000_000,
        ge=0,
        description=(
            "/readyz answers 503 while the local disk of the store (its artifacts, or its "
            "SQLite catalogue) has less free space than this: a replica whose writes "
            "would fail is not ready. 0: no check."
        ),
    )
    database_url: SecretStr | None = Field(
        None,
        description=(
            "Database of the catalogue: the metadata of models, datasets and jobs, and "
            "idempotency keys. `postgresql+psycopg://user:password@host:5432/db` (needs "
            "the `postgres` extra) for replicas sharing one store; its schema is migrated "
            "at start-up. Unset: SQLite, `catalogue.db` in store_dir."
        ),
    )
    database_pool_size: int = Field(
        5,
        ge=1,
        le=100,
        description=(
            "Connections each worker keeps open to a PostgreSQL database_url (as many "
            "again may open under load, then requests wait): size the server's "
            "max_connections for replicas x workers x 2 x this."
        ),
    )
    orphan_grace_seconds: float = Field(
        3600.0,
        ge=1,
        description=(
            "Artifacts without a row in the catalogue (left by a write or delete that "
            "crashed midway) are removed once they are this old, and so are datasets a "
            "fit stored from the points in its body that nothing refers to (those are "
            "otherwise deleted with their last model or job); a write in flight on "
            "another replica is never this old."
        ),
    )
    sweep_interval_seconds: float = Field(
        30.0,
        ge=0.1,
        description=(
            "How often each worker deletes the models and job records past their "
            "`expires_at` (so they go at most this late), and at most how often it looks "
            "for orphan artifacts (every quarter of orphan_grace_seconds at most)."
        ),
    )
    s3_endpoint_url: str | None = Field(
        None,
        description=(
            "Endpoint of an S3-compatible service (MinIO, Ceph, ...) for store_url; "
            "unset: AWS_ENDPOINT_URL if set, else AWS S3."
        ),
    )
    s3_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description=(
            "Longest the S3 store waits to connect to its endpoint, and then for each "
            "part of an answer, on each attempt (boto's standard retries make 3): an "
            "endpoint that takes a request and never answers fails it with a 503 after "
            "about 3 times this plus back-off, and /readyz turns 503 as soon, instead of "
            "holding a request and its thread for boto's default of 60 s an attempt."
        ),
    )
    dask_scheduler: str | None = Field(
        None,
        pattern=r"^(tcp|tls|inproc|ws|wss)://\S+$",
        description=(
            "Address of a Dask `distributed` scheduler (`tcp://host:8786`; needs the "
            "`dask` extra). Set: fits, model-selection cells and comparisons run as tasks "
            "on its workers, and `engine: dask` fits stored datasets in row chunks there. "
            "Unset: everything runs in this process, as before."
        ),
    )
    secret_key: SecretStr | None = Field(
        None,
        description=(
            "Key that signs stored artifacts (HMAC-SHA256). When unset, a random key is "
            "generated once into a 0600 file inside the store, so replicas sharing a "
            "store must share this value instead."
        ),
    )
    cache_size: int = Field(64, ge=0, description="Loaded models kept in memory per worker (LRU).")
    fast_path: bool = Field(
        True,
        description=(
            "Answer predict, score and v2 infer of models already in memory in a small "
            "layer ahead of FastAPI's routing: the same answers, headers, errors, logs and "
            "metrics, at a fraction of the cost per request. false: every request goes "
            "through FastAPI's route (to rule the hot path out when diagnosing)."
        ),
    )
    model_recheck_seconds: float = Field(
        0.5,
        ge=0,
        le=60,
        description=(
            "How long a model in a worker's memory counts as still stored after the store "
            "last said so: predictions within it read nothing (they run on the event loop, "
            "whatever the store), and a delete made through another worker or replica is "
            "seen at most this late (a request starting later than this after the delete "
            "answers 404). 0: the store is asked at every prediction, in the threadpool."
        ),
    )

    # Limits: each one turns an absurd request into a 413/422 before work starts.
    max_body_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    max_upload_bytes: int = Field(
        1024**3,
        ge=1024,
        description=(
            "Largest .npy or CSV body of POST /v1/datasets, in bytes (JSON bodies there stay "
            "under max_body_bytes); enforced while the body streams in. The points must "
            "also fit max_points, max_features and max_values."
        ),
    )
    max_points: int = Field(
        2_000_000, ge=1, description="Most rows (samples) in one request's data."
    )
    max_features: int = Field(1_000, ge=1, description="Most columns (features) per row.")
    max_values: int = Field(
        20_000_000, ge=1, description="Most numbers (rows x features) in one request's data."
    )
    max_components: int = Field(
        256, ge=1, description="Largest n_components / n_clusters accepted."
    )
    max_model_parameters: int = Field(
        1_000_000,
        ge=1,
        description=(
            "Most numbers a fitted model may hold in its weights, means and covariances "
            "(a full mixture: n_components x n_features^2 for the covariances alone), "
            "checked before fitting: each is stored, loaded into memory and answered by "
            "GET, so this bounds a model's size, not only its fit."
        ),
    )
    max_iter: int = Field(10_000, ge=1, description="Largest max_iter accepted.")
    max_n_init: int = Field(100, ge=1, description="Largest n_init accepted.")
    max_grid_cells: int = Field(
        100, ge=1, description="Most cells (fits) in one model-selection grid."
    )
    max_parallel_fits: int = Field(
        2, ge=1, description="Fits one model-selection or comparison request runs at once."
    )
    max_default_per_point_values: int = Field(
        1_000_000,
        ge=0,
        description=(
            "Most numbers the per-point arrays of POST /v1/models (labels, probabilities) "
            "hold when the request leaves `include` out; past it they are left out of the "
            "answer and `omitted` names them. A request naming them in `include` gets them "
            "at any size."
        ),
    )
    default_page_size: int = Field(
        50, ge=1, le=1000, description="Models (and datasets) per list page."
    )

    # Load shedding and isolation.
    max_concurrent_fits: int = Field(
        4,
        ge=1,
        description=(
            "Synchronous fitting requests (models, model selection, comparisons) running "
            "at once per worker; past it a request waits in the fit queue."
        ),
    )
    fit_queue_length: int = Field(
        32,
        ge=0,
        description=(
            "Synchronous fitting requests that may wait for a free slot per worker; one "
            "more is answered 429 with Retry-After. Each waiting request holds a server "
            "thread (40 per worker), so keep it well below that."
        ),
    )
    fit_queue_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "Longest a queued fitting request waits for a slot before it is answered 429 "
            "with Retry-After."
        ),
    )
    job_stale_seconds: float = Field(
        60.0,
        ge=1,
        description=(
            "A queued or running job whose owner process has not refreshed it for this "
            "long (each owner refreshes its jobs every quarter of it) is marked failed "
            "when read: its process died. Matters when replicas share an S3 store."
        ),
    )
    job_retention_seconds: float = Field(
        7 * 86400.0,
        ge=1,
        description=(
            "How long the record of a finished job (succeeded, failed or cancelled) is "
            "kept after it finished: its `expires_at`; then it is removed, as by DELETE."
        ),
    )
    idempotency_seconds: float = Field(
        86400.0,
        ge=1,
        description=(
            "How long an `Idempotency-Key` of POST /v1/models, /v1/model-selection or "
            "/v1/comparisons is remembered: a retry within it answers the first request's "
            "job or result instead of starting the work again."
        ),
    )
    job_queue_length: int = Field(
        64,
        ge=0,
        le=100_000,
        description=(
            "Most jobs (wait=false work) waiting for a job worker per worker process; "
            "past it, such requests answer 429 with Retry-After. A queued fit holds its "
            "points as a stored dataset, read when it starts, not in memory."
        ),
    )
    job_workers: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "Jobs (long work submitted with wait=false, or fits estimated to be long) "
            "running at once per worker; further jobs wait as `queued`."
        ),
    )
    sync_wait_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description=(
            "How long a fit, model selection or comparison request without `wait` waits "
            "for its work, which runs as a job: work that ends in time answers 201/200 "
            "with the full result, work that has not answers 202 with the job, which "
            "goes on. A request's `Prefer: wait=N` sets it for that request (at most "
            "this bound's upper limit, 3600)."
        ),
    )
    fit_timeout_seconds: float | None = Field(
        None,
        gt=0,
        description=(
            "When set, every fit runs in a separate worker process that is killed when the "
            "fit takes longer; the request gets a 422 `fit-timeout` problem (it asked for "
            "more work than the limit allows) and nothing is stored. Unset: fits run in "
            "threads with no time limit."
        ),
    )

    # Access and browsers.
    api_keys: SecretStr | None = Field(
        None,
        description=(
            "Comma-separated API keys; when set (or api_keys_file is), every /v1 route needs "
            "`X-API-Key` or `Authorization: Bearer`. A key written `key:read` may only read "
            "and predict; other keys may also create and delete."
        ),
    )
    api_keys_file: Path | None = Field(
        None,
        description=(
            "File of hashed keys, one per line: `sha256:<hex digest of the key>` optionally "
            "followed by `:read`. Lines starting with # are comments."
        ),
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins allowed by CORS (`*` for any); empty: CORS off.",
    )
    log_json: bool = Field(True, description="One JSON line per request on stderr.")
    metrics_dir: Path | None = Field(
        None,
        description=(
            "Folder where the workers' Prometheus metrics meet (prometheus-client's "
            "multiprocess mode), so that /metrics counts every worker's requests whichever "
            "worker answers the scrape. `python -m service` with workers > 1 uses a fresh "
            "temporary folder when unset; running uvicorn by hand with several workers, set "
            "it and PROMETHEUS_MULTIPROC_DIR to the same empty folder."
        ),
    )
