"""``Client`` and ``AsyncClient``: one typed method per operation of the service.

Each operation is written once, as a generator that yields the HTTP calls it needs
(and pauses, when it polls a job) and receives their responses. ``Client`` drives
those generators with a blocking ``httpx.Client``, ``AsyncClient`` with an
``httpx.AsyncClient``, so the two can never drift apart. Method names are the
OpenAPI operation ids (``OPERATIONS`` maps each to its route; a test checks the map
against ``openapi/openapi.json``).

Arrays travel as ``.npy``: a points array larger than ``npy_threshold`` values is
uploaded as a dataset (stored once, by content) and the request sends its
``dataset_id``; ``predict`` and ``score_points`` send ``.npy`` bodies. Small arrays go
inline as JSON, which is one round trip.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Generic, Literal, ParamSpec, TypeVar, overload

import httpx
import numpy as np

from gmm_client._arrays import NPY, as_points, from_npy, to_npy
from gmm_client.errors import GMMError, JobFailed, NotFound, problem_for_status, problem_from

__all__ = ["OPERATIONS", "AsyncClient", "Client", "Dataset", "data_spec"]

DEFAULT_URL = "http://127.0.0.1:8000"
#: Points arrays with more values than this are uploaded as ``.npy`` datasets.
NPY_THRESHOLD = 20_000
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

#: operation id -> (method, path): the routes this client calls, one per operation.
OPERATIONS: dict[str, tuple[str, str]] = {
    "healthz": ("GET", "/healthz"),
    "readyz": ("GET", "/readyz"),
    "metrics": ("GET", "/metrics"),
    "create_model": ("POST", "/v1/models"),
    "list_models": ("GET", "/v1/models"),
    "get_model": ("GET", "/v1/models/{model_id}"),
    "update_model": ("PATCH", "/v1/models/{model_id}"),
    "delete_model": ("DELETE", "/v1/models/{model_id}"),
    "predict": ("POST", "/v1/models/{model_id}/predict"),
    "score_points": ("POST", "/v1/models/{model_id}/score"),
    "sample_points": ("POST", "/v1/models/{model_id}/sample"),
    "generate_dataset": ("POST", "/v1/datasets/generate"),
    "create_dataset": ("POST", "/v1/datasets"),
    "list_datasets": ("GET", "/v1/datasets"),
    "get_dataset": ("GET", "/v1/datasets/{dataset_id}"),
    "delete_dataset": ("DELETE", "/v1/datasets/{dataset_id}"),
    "plot_model": ("GET", "/v1/models/{model_id}/plot"),
    "get_model_ellipses": ("GET", "/v1/models/{model_id}/ellipses"),
    "get_model_points": ("GET", "/v1/models/{model_id}/points"),
    "plot_dataset": ("POST", "/v1/datasets/plot"),
    "export_model": ("GET", "/v1/models/{model_id}/export"),
    "import_model": ("POST", "/v1/models/import"),
    "select_model": ("POST", "/v1/model-selection"),
    "plot_model_selection": ("POST", "/v1/model-selection/plot"),
    "compare_algorithms": ("POST", "/v1/comparisons"),
    "list_jobs": ("GET", "/v1/jobs"),
    "get_job": ("GET", "/v1/jobs/{job_id}"),
    "get_job_result": ("GET", "/v1/jobs/{job_id}/result"),
    "cancel_job": ("POST", "/v1/jobs/{job_id}/cancel"),
    "delete_job": ("DELETE", "/v1/jobs/{job_id}"),
}

JSON = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")


class _Unset:
    """Not given (as opposed to None, which a merge patch uses to remove a field)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


@dataclass(frozen=True)
class Dataset:
    """A stored dataset, by id: pass it wherever ``data`` goes to fit without sending
    the points again."""

    id: str


@dataclass
class _Call:
    """One HTTP request an operation needs."""

    operation: str
    path_params: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | IO[bytes] | None = None
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        self._start: int | None = None
        if _is_file(self.content) and self.content.seekable():  # type: ignore[union-attr]
            self._start = self.content.tell()  # type: ignore[union-attr]

    def rewind(self) -> bool:
        """Ready to be sent again: a file body goes back to where it started; False
        when it cannot (stdin is read once)."""
        if not _is_file(self.content):
            return True
        if self._start is None:
            return False
        self.content.seek(self._start)  # type: ignore[union-attr]
        return True

    @property
    def method(self) -> str:
        return OPERATIONS[self.operation][0]

    @property
    def path(self) -> str:
        return OPERATIONS[self.operation][1].format(**self.path_params)


@dataclass
class _Sleep:
    seconds: float


_Step = Generator["_Call | _Sleep", "httpx.Response | None", T]


class _Operation(Generic[P, T]):
    """A generator-based operation, bound as a plain method on ``Client`` and as a
    coroutine method on ``AsyncClient``."""

    def __init__(self, func: Callable[P, _Step[T]]):
        self.func = func
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    @overload
    def __get__(self, obj: AsyncClient, owner: Any = None) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __get__(self, obj: Client, owner: Any = None) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: None, owner: Any = None) -> _Operation[P, T]: ...
    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        func = self.func

        if isinstance(obj, AsyncClient):

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await obj._drive(func(obj, *args, **kwargs))  # type: ignore[arg-type]

            run_async.__doc__ = func.__doc__
            run_async.__name__ = func.__name__
            return run_async

        def run(*args: Any, **kwargs: Any) -> Any:
            return obj._drive(func(obj, *args, **kwargs))  # type: ignore[arg-type]

        run.__doc__ = func.__doc__
        run.__name__ = func.__name__
        return run


def operation(func: Callable[..., _Step[T]]) -> Any:
    return _Operation(func)


def _is_file(value: Any) -> bool:
    """A binary file object (streamed as a body, never read into memory here)."""
    return hasattr(value, "read") and not isinstance(value, bytes | str)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (
        isinstance(value, list | tuple) and bool(value) and isinstance(value[0], list | tuple)
    )


def _present(**params: Any) -> dict[str, Any]:
    """Query parameters that were given (None means: leave it to the service)."""
    return {key: value for key, value in params.items() if value is not None}


def data_spec(data: Any) -> JSON | None:
    """The ``data`` object for small inputs, or None when ``data`` is an array to upload.

    Accepts a ``Dataset``, a dataset id string, a ready spec (``{"points"}``,
    ``{"generator"}``, ``{"dataset_id"}``) or an array-like of points."""
    if isinstance(data, Dataset):
        return {"dataset_id": data.id}
    if isinstance(data, str):
        return {"dataset_id": data}
    if isinstance(data, Mapping):
        return dict(data)
    return None


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default context for checking servers, made once for each value of the
    variables it reads (``SSL_CERT_FILE``, ``SSL_CERT_DIR``): making one reads the whole
    CA bundle (~20 ms), and every remote estimator, each clone sklearn makes of one
    included, opens a client of its own."""
    return httpx.create_ssl_context()


def _verify() -> ssl.SSLContext:
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


class _Base:
    """Configuration and the operations; subclasses only add a driver."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        npy_threshold: int = NPY_THRESHOLD,
        retries_on_busy: int = 3,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("GMM_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("GMM_API_KEY")
        self.timeout = timeout
        self.npy_threshold = npy_threshold
        self.retries_on_busy = retries_on_busy
        self.headers = {"User-Agent": "gmm-client/0.1", **(headers or {})}
        if self.api_key:
            self.headers["X-API-Key"] = self.api_key

    # -- driving -------------------------------------------------------------------
    def _request_args(self, call: _Call) -> dict[str, Any]:
        args: dict[str, Any] = {"params": call.params, "headers": call.headers}
        if call.content is not None:
            args["content"] = call.content
        elif call.json is not None:
            args["json"] = call.json
        return args

    # -- data helpers --------------------------------------------------------------
    def _data(self, data: Any) -> _Step[JSON]:
        """The ``data`` object for ``data``: a large array is uploaded first."""
        spec = data_spec(data)
        if spec is not None:
            return spec
        X = as_points(data)
        if X.size > self.npy_threshold:
            dataset = yield from self._upload(X, None)
            return {"dataset_id": dataset["id"]}
        return {"points": X.tolist()}

    def _upload(
        self, X: np.ndarray, name: str | None, ttl_seconds: int | None = None
    ) -> _Step[JSON]:
        response = yield _Call(
            "create_dataset",
            params=_present(name=name, ttl_seconds=ttl_seconds) or None,
            content=to_npy(X),
            headers={"Content-Type": NPY},
        )
        assert response is not None
        return response.json()  # type: ignore[no-any-return]

    def _points_body(self, X: Any) -> tuple[Any, bytes | None, dict[str, str] | None]:
        arr = as_points(X)
        if arr.size > self.npy_threshold:
            return None, to_npy(arr), {"Content-Type": NPY}
        return {"points": arr.tolist()}, None, None

    def _json(self, call: _Call) -> _Step[Any]:
        """Send ``call`` and return its JSON answer."""
        response = yield call
        assert response is not None
        return response.json()

    def _submit(
        self, operation: str, body: JSON, wait: bool, progress: bool | Callable[[JSON], None]
    ) -> _Step[Any]:
        """POST long work: with ``wait=False`` or a progress report it runs as a job,
        followed to its end; the answer is the model or result either way. A ``wait``
        the caller put in the body (through ``extra``) is kept."""
        if not wait or progress:
            body.setdefault("wait", False)
        response = yield _Call(operation, json=body)
        assert response is not None
        if response.status_code != 202:
            return response.json()
        job = yield from self._follow(response.json(), progress)
        return (yield from self._job_result(job, body.get("include") or []))

    def _job_result(self, job: JSON, include: list[str]) -> _Step[Any]:
        """What the request that made a succeeded ``job`` would have answered had it
        not been a job (``GET /v1/jobs/{id}/result``): for a fit, the model resource
        and the per-point arrays named by ``include``; else the result body.

        A service older than that route (its 404 is a route's, ``about:blank``, not a
        job's) has the model resource or the job's ``result`` only; asked for per-point
        arrays it cannot answer, this raises rather than return a model without them."""
        try:
            response = yield _Call("get_job_result", {"job_id": job["id"]})
        except NotFound as err:
            if err.type != "about:blank":
                raise
        else:
            assert response is not None
            return response.json()
        model_id = job.get("model_id")
        if not model_id:
            return job.get("result")
        if include:
            raise GMMError(
                f"job {job['id']} stored model {model_id}, but this service has no "
                f"GET /v1/jobs/{{id}}/result to answer its {', '.join(include)}: predict "
                "them with the model"
            )
        return (yield from self._json(_Call("get_model", {"model_id": model_id})))

    def _follow(self, job: JSON, progress: bool | Callable[[JSON], None]) -> _Step[JSON]:
        """Poll a job until it ends; report each state to ``progress``."""
        report: Callable[[JSON], None] | None
        bar = None
        if progress is True:
            from gmm_client.progress import JobBar

            bar = JobBar()
            report = bar.update
        else:
            report = progress or None
        delay = 0.05
        try:
            while True:
                if report is not None:
                    report(job)
                if job["status"] in TERMINAL:
                    break
                yield _Sleep(delay)
                delay = min(delay * 1.5, 1.0)
                response = yield _Call("get_job", {"job_id": job["id"]})
                assert response is not None
                job = response.json()
        finally:
            if bar is not None:
                bar.close()
        if job["status"] != "succeeded":
            error = job.get("error")
            if job["status"] == "failed" and error:
                raise problem_for_status(int(error.get("status", 500)), error) from JobFailed(job)
            raise JobFailed(job)
        return job

    # -- health --------------------------------------------------------------------
    @operation
    def healthz(self) -> _Step[JSON]:
        """Liveness: the process answers."""
        return (yield from self._json(_Call("healthz")))

    @operation
    def readyz(self) -> _Step[JSON]:
        """Readiness: the store is usable."""
        return (yield from self._json(_Call("readyz")))

    @operation
    def metrics(self) -> _Step[str]:
        """Prometheus metrics, as text."""
        r = yield _Call("metrics")
        return r.text  # type: ignore[union-attr]

    # -- models --------------------------------------------------------------------
    @operation
    def create_model(
        self,
        algorithm: str,
        data: Any,
        params: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        include: list[str] | None = None,
        align_to: str | None = None,
        ttl_seconds: int | None = None,
        wait: bool = True,
        progress: bool | Callable[[JSON], None] = False,
        extra: Mapping[str, Any] | None = None,
    ) -> _Step[JSON]:
        """Fit ``algorithm`` on ``data`` and return the stored model resource (deleted
        by the service ``ttl_seconds`` after it is stored, when given).

        ``data`` is an array (uploaded as ``.npy`` when large), a ``Dataset``, or a
        data object (``{"generator": ...}``). A fit the service runs as a job (asked
        with ``wait=False``, or one that outlasted its wait: a 202) is followed to its
        end: quietly, with a progress bar (``progress=True``), or reporting each job
        state to a callable; its answer is then read from ``GET /v1/jobs/{id}/result``,
        so the return value is a 201's either way. ``include`` names the per-point
        arrays to return (default: none, as a client fitting many points wants)."""
        body: JSON = {
            "algorithm": algorithm,
            "params": dict(params or {}),
            "data": (yield from self._data(data)),
            "include": list(include or []),
        }
        if name is not None:
            body["name"] = name
        if tags:
            body["tags"] = dict(tags)
        if align_to is not None:
            body["align_to"] = align_to
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        body.update(extra or {})
        return (yield from self._submit("create_model", body, wait, progress))

    @operation
    def list_models(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        name: str | None = None,
        algorithm: str | None = None,
        tag: Mapping[str, str] | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
    ) -> _Step[JSON]:
        """One page of models, newest first: ``items``, ``total``, ``next_cursor``;
        only those with this ``name``, ``algorithm`` and every ``tag`` given, created
        after ``created_after`` and at or before ``created_before`` (aware datetimes, or
        ISO 8601 text with a zone)."""
        params: list[tuple[str, Any]] = [
            (k, v.isoformat() if isinstance(v, datetime) else v)
            for k, v in {
                "limit": limit,
                "cursor": cursor,
                "name": name,
                "algorithm": algorithm,
                "created_after": created_after,
                "created_before": created_before,
            }.items()
            if v is not None
        ]
        params += [("tag", f"{key}:{value}") for key, value in (tag or {}).items()]
        r = yield _Call("list_models", params=params)  # type: ignore[arg-type]
        return r.json()  # type: ignore[union-attr, no-any-return]

    @operation
    def update_model(
        self,
        model_id: str,
        *,
        name: str | _Unset | None = UNSET,
        tags: Mapping[str, str | None] | _Unset | None = UNSET,
        ttl_seconds: int | _Unset | None = UNSET,
    ) -> _Step[JSON]:
        """Rename a model or change its tags (a JSON merge patch): ``name=None``
        removes the name; in ``tags`` a string sets a tag and None removes it; tags not
        named are kept (``tags=None`` removes them all). ``ttl_seconds`` has the model
        deleted that long from now (None: kept until deleted)."""
        body: JSON = {}
        if not isinstance(name, _Unset):
            body["name"] = name
        if not isinstance(tags, _Unset):
            body["tags"] = dict(tags) if tags is not None else None
        if not isinstance(ttl_seconds, _Unset):
            body["ttl_seconds"] = ttl_seconds
        return (
            yield from self._json(
                _Call(
                    "update_model",
                    {"model_id": model_id},
                    json=body,
                    headers={"Content-Type": "application/merge-patch+json"},
                )
            )
        )

    @operation
    def get_model(self, model_id: str) -> _Step[JSON]:
        """The model resource: parameters, means, covariances, weights..."""
        return (yield from self._json(_Call("get_model", {"model_id": model_id})))

    @operation
    def delete_model(self, model_id: str) -> _Step[None]:
        """Delete a model, for every worker and replica."""
        yield _Call("delete_model", {"model_id": model_id})

    @operation
    def predict(self, model_id: str, X: Any) -> _Step[dict[str, np.ndarray]]:
        """``labels`` and ``probabilities`` (mixtures) or ``distances`` (k-means), as
        arrays."""
        body, content, headers = self._points_body(X)
        r = yield _Call(
            "predict", {"model_id": model_id}, json=body, content=content, headers=headers
        )
        assert r is not None
        return {k: np.asarray(v) for k, v in r.json().items() if isinstance(v, list)}

    @operation
    def score_points(self, model_id: str, X: Any) -> _Step[JSON]:
        """Per-point ``log_likelihood`` (an array), their mean ``score``, and each
        point's ``percentile`` among the training points."""
        body, content, headers = self._points_body(X)
        r = yield _Call(
            "score_points", {"model_id": model_id}, json=body, content=content, headers=headers
        )
        assert r is not None
        out: JSON = r.json()
        for key in ("log_likelihood", "percentile"):
            if isinstance(out.get(key), list):
                out[key] = np.asarray(out[key], dtype=np.float64)
        return out

    @operation
    def predict_npy(
        self, model_id: str, X: Any, output: str = "labels", *, operation: str = "predict"
    ) -> _Step[np.ndarray]:
        """One output array (``labels``, ``probabilities``, ``distances``; for
        ``operation="score_points"``, ``log_likelihood``) sent and answered as ``.npy``:
        the cheapest way to score many points."""
        r = yield _Call(
            operation,
            {"model_id": model_id},
            params={"output": output},
            content=to_npy(as_points(X)),
            headers={"Content-Type": NPY, "Accept": NPY},
        )
        assert r is not None
        return from_npy(r.content)

    @operation
    def sample_points(
        self, model_id: str, n_samples: int = 1, *, random_state: int | None = None
    ) -> _Step[tuple[np.ndarray, np.ndarray]]:
        """``(points, labels)`` drawn from a mixture, as sklearn's ``sample`` gives."""
        body: JSON = {"n_samples": n_samples}
        if random_state is not None:
            body["random_state"] = random_state
        r = yield _Call("sample_points", {"model_id": model_id}, json=body)
        assert r is not None
        out = r.json()
        d = np.asarray(out["points"], dtype=np.float64)
        return d.reshape(len(out["labels"]), -1), np.asarray(out["labels"], dtype=np.int64)

    # -- datasets ------------------------------------------------------------------
    @operation
    def generate_dataset(self, generator: Mapping[str, Any]) -> _Step[tuple[np.ndarray, Any]]:
        """``(points, true labels)`` of a generator spec (``{"kind": "blobs", ...}``)."""
        r = yield _Call("generate_dataset", json=dict(generator))
        assert r is not None
        out = r.json()
        return np.asarray(out["points"], dtype=np.float64), np.asarray(out["labels"])

    @operation
    def create_dataset(
        self,
        data: Any,
        *,
        name: str | None = None,
        content_type: str | None = None,
        ttl_seconds: int | None = None,
    ) -> _Step[JSON]:
        """Store points once, by content, and return the dataset resource (deleted by
        the service ``ttl_seconds`` after it is stored, when given).

        ``data`` is an array (sent as ``.npy``), the ``bytes`` or a binary file object
        (streamed, never read into memory) of a ``.npy`` or CSV file (say which with
        ``content_type``; CSV is ``"text/csv"``, ``"text/csv; header=present"`` or
        ``"; header=absent"`` to say whether its first row is a header), or a
        ``{"generator": ...}`` object."""
        if isinstance(data, bytes) or _is_file(data):
            resource, _ = yield from self._post_file(data, content_type or NPY, name, ttl_seconds)
            return resource
        if isinstance(data, Mapping):
            body = {
                **data,
                **({"name": name} if name else {}),
                **({"ttl_seconds": ttl_seconds} if ttl_seconds is not None else {}),
            }
            return (yield from self._json(_Call("create_dataset", json=body)))
        return (yield from self._upload(as_points(data), name, ttl_seconds))

    @operation
    def upload_dataset(
        self, file: bytes | IO[bytes], content_type: str, *, name: str | None = None
    ) -> _Step[tuple[JSON, bool]]:
        """``create_dataset`` of a file's bytes (or a binary file object, streamed),
        answering ``(resource, created)``: ``created`` is False when the same points
        were stored already (the service answered 200, not 201)."""
        return (yield from self._post_file(file, content_type, name))

    def _post_file(
        self,
        file: bytes | IO[bytes],
        content_type: str,
        name: str | None,
        ttl_seconds: int | None = None,
    ) -> _Step[tuple[JSON, bool]]:
        response = yield _Call(
            "create_dataset",
            params=_present(name=name, ttl_seconds=ttl_seconds) or None,
            content=file,
            headers={"Content-Type": content_type},
        )
        assert response is not None
        return response.json(), response.status_code == 201

    @operation
    def list_datasets(self, *, limit: int | None = None, cursor: str | None = None) -> _Step[JSON]:
        """One page of datasets."""
        params = _present(limit=limit, cursor=cursor)
        return (yield from self._json(_Call("list_datasets", params=params)))

    @operation
    def get_dataset(self, dataset_id: str) -> _Step[JSON]:
        return (yield from self._json(_Call("get_dataset", {"dataset_id": dataset_id})))

    @operation
    def delete_dataset(self, dataset_id: str) -> _Step[None]:
        yield _Call("delete_dataset", {"dataset_id": dataset_id})

    # -- pictures and geometry -----------------------------------------------------
    @operation
    def plot_model(
        self,
        model_id: str,
        *,
        format: Literal["png", "svg"] = "png",
        kind: str | None = None,
        width: int | None = None,
        height: int | None = None,
        dpi: int | None = None,
    ) -> _Step[bytes]:
        """The model's plot (points by label, means, ellipses; or ``kind="convergence"``)."""
        params = {"format": format, "kind": kind, "width": width, "height": height, "dpi": dpi}
        r = yield _Call(
            "plot_model",
            {"model_id": model_id},
            params=_present(**params),
        )
        return r.content  # type: ignore[union-attr]

    @operation
    def get_model_ellipses(self, model_id: str) -> _Step[JSON]:
        """The 1-3 sigma ellipses of each component, ready to draw."""
        return (yield from self._json(_Call("get_model_ellipses", {"model_id": model_id})))

    @operation
    def get_model_points(self, model_id: str, *, limit: int | None = None) -> _Step[JSON]:
        """The model's training points, every ``step``-th one: at most ``limit`` rows
        (the service's default 5,000), for drawing."""
        call = _Call("get_model_points", {"model_id": model_id}, params=_present(limit=limit))
        return (yield from self._json(call))

    @operation
    def plot_dataset(
        self, generator: Mapping[str, Any], *, format: Literal["png", "svg"] = "png", **options: Any
    ) -> _Step[bytes]:
        """A scatter plot of the points a generator spec stands for, by true label."""
        r = yield _Call("plot_dataset", params={"format": format, **options}, json=dict(generator))
        return r.content  # type: ignore[union-attr]

    # -- moving models -------------------------------------------------------------
    @operation
    def export_model(self, model_id: str) -> _Step[JSON]:
        """A portable JSON document of the model (no pickle), for ``import_model``."""
        return (yield from self._json(_Call("export_model", {"model_id": model_id})))

    @operation
    def export_onnx(self, model_id: str) -> _Step[bytes]:
        """The model as ONNX bytes, for ``onnxruntime.InferenceSession(...)`` in any
        language: input ``points`` (float64, ``[N, n_features]``), outputs ``labels``
        and ``probabilities`` plus ``log_likelihood`` (mixtures) or ``distances``
        (k-means). A server without its ``onnx`` extra raises ``ServerError`` (501)."""
        r = yield _Call("export_model", {"model_id": model_id}, params={"format": "onnx"})
        assert r is not None
        return r.content

    @operation
    def import_model(self, document: Mapping[str, Any]) -> _Step[JSON]:
        """Store a model from an exported document; returns the new model resource."""
        return (yield from self._json(_Call("import_model", json=dict(document))))

    # -- choosing ------------------------------------------------------------------
    @operation
    def select_model(
        self,
        data: Any,
        n_components: list[int] | Mapping[str, int],
        *,
        covariance_type: list[str] | None = None,
        criterion: str | None = None,
        params: Mapping[str, Any] | None = None,
        store_best: bool | None = None,
        name: str | None = None,
        wait: bool = True,
        progress: bool | Callable[[JSON], None] = False,
    ) -> _Step[JSON]:
        """BIC/AIC over a grid of ``n_components`` (and covariance types): every cell's
        scores and the best one. Run as a job (a 202), it is followed and its result
        read, as ``create_model`` does."""
        grid: JSON = {
            "n_components": n_components if isinstance(n_components, list) else dict(n_components)
        }
        if covariance_type is not None:
            grid["covariance_type"] = list(covariance_type)
        body: JSON = {"data": (yield from self._data(data)), "grid": grid}
        for key, value in (
            ("criterion", criterion),
            ("params", dict(params) if params else None),
            ("store_best", store_best),
            ("name", name),
        ):
            if value is not None:
                body[key] = value
        return (yield from self._submit("select_model", body, wait, progress))

    @operation
    def plot_model_selection(
        self, body: Mapping[str, Any], *, format: Literal["png", "svg"] = "png", **options: Any
    ) -> _Step[bytes]:
        """The criterion curve of a model selection request (the same body)."""
        r = yield _Call("plot_model_selection", params={"format": format, **options}, json=body)
        return r.content  # type: ignore[union-attr]

    @operation
    def compare_algorithms(
        self,
        data: Any,
        algorithms: list[Mapping[str, Any]],
        *,
        true_labels: list[int] | None = None,
        wait: bool = True,
        progress: bool | Callable[[JSON], None] = False,
        extra: Mapping[str, Any] | None = None,
    ) -> _Step[JSON]:
        """Fit several algorithms on the same data and compare their clusterings (a 202
        is followed and its result read, as ``create_model`` does)."""
        body: JSON = {
            "data": (yield from self._data(data)),
            "algorithms": [dict(a) for a in algorithms],
        }
        if true_labels is not None:
            body["true_labels"] = list(true_labels)
        body.update(extra or {})
        return (yield from self._submit("compare_algorithms", body, wait, progress))

    # -- jobs ----------------------------------------------------------------------
    @operation
    def list_jobs(self, *, limit: int | None = None, cursor: str | None = None) -> _Step[JSON]:
        params = _present(limit=limit, cursor=cursor)
        return (yield from self._json(_Call("list_jobs", params=params)))

    @operation
    def get_job(self, job_id: str) -> _Step[JSON]:
        return (yield from self._json(_Call("get_job", {"job_id": job_id})))

    @operation
    def cancel_job(self, job_id: str) -> _Step[JSON]:
        """Ask a job to stop at its next step; returns the job as it stands."""
        return (yield from self._json(_Call("cancel_job", {"job_id": job_id})))

    @operation
    def delete_job(self, job_id: str) -> _Step[None]:
        """Cancel the job if it still runs and remove its record."""
        yield _Call("delete_job", {"job_id": job_id})

    @operation
    def wait_job(
        self, job_id: str, *, progress: bool | Callable[[JSON], None] = False
    ) -> _Step[JSON]:
        """Follow a job to its end and return it; a failed or cancelled job raises
        (the failed fit's own problem, say a 422 ``InvalidInput``, or ``JobFailed``)."""
        r = yield _Call("get_job", {"job_id": job_id})
        assert r is not None
        return (yield from self._follow(r.json(), progress))

    @operation
    def get_job_result(self, job_id: str) -> _Step[Any]:
        """A succeeded job's answer: exactly what its request would have answered
        without a job (a fit: the model resource and the ``include`` arrays). A job
        still queued or running raises a 409 ``ProblemError``; a failed one, its own
        problem."""
        return (yield from self._json(_Call("get_job_result", {"job_id": job_id})))


class Client(_Base):
    """Blocking client. Use as a context manager, or call ``close()``.

    ``base_url`` defaults to ``$GMM_URL`` (else http://127.0.0.1:8000) and ``api_key``
    to ``$GMM_API_KEY``."""

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=self.timeout,
            transport=transport,
            verify=_verify(),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def iter_models(self, *, page_size: int = 100) -> Iterator[JSON]:
        """Every model, newest first, page by page."""
        cursor = None
        while True:
            page = self.list_models(limit=page_size, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def _send(self, call: _Call) -> httpx.Response:
        for attempt in range(self.retries_on_busy + 1):
            response = self._http.request(call.method, call.path, **self._request_args(call))
            if response.status_code != 429 or attempt == self.retries_on_busy:
                break
            if not call.rewind():
                break
            time.sleep(_retry_delay(response, attempt))
        if response.status_code >= 400:
            raise problem_from(response)
        return response

    def _drive(self, steps: _Step[T]) -> T:
        value: httpx.Response | None = None
        error: BaseException | None = None
        while True:
            try:
                step = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            value, error = None, None
            try:  # a failure goes back into the operation, so its cleanup runs first
                if isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                else:
                    value = self._send(step)
            except Exception as exc:
                error = exc


class AsyncClient(_Base):
    """The same operations as ``Client``, as coroutines (``await client.predict(...)``)."""

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=self.timeout,
            transport=transport,
            verify=_verify(),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def iter_models(self, *, page_size: int = 100) -> AsyncIterator[JSON]:
        cursor = None
        while True:
            page = await self.list_models(limit=page_size, cursor=cursor)
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def _request_args(self, call: _Call) -> dict[str, Any]:
        args = super()._request_args(call)
        if _is_file(call.content):  # httpx's AsyncClient streams async iterables only
            args["content"] = _async_chunks(call.content)  # type: ignore[arg-type]
        return args

    async def _send(self, call: _Call) -> httpx.Response:
        for attempt in range(self.retries_on_busy + 1):
            response = await self._http.request(call.method, call.path, **self._request_args(call))
            if response.status_code != 429 or attempt == self.retries_on_busy:
                break
            if not call.rewind():
                break
            await asyncio.sleep(_retry_delay(response, attempt))
        if response.status_code >= 400:
            raise problem_from(response)
        return response

    async def _drive(self, steps: _Step[T]) -> T:
        value: httpx.Response | None = None
        error: BaseException | None = None
        while True:
            try:
                step = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                else:
                    value = await self._send(step)
            except Exception as exc:
                error = exc


async def _async_chunks(file: IO[bytes], size: int = 1 << 16) -> AsyncIterator[bytes]:
    while chunk := file.read(size):
        yield chunk


def _retry_delay(response: httpx.Response, attempt: int) -> float:
    try:
        return min(float(response.headers.get("retry-after", "")), 30.0)
    except ValueError:
        return min(0.5 * 2**attempt, 30.0)
