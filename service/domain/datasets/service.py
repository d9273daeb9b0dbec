"""Datasets: data in from any source (generators, JSON points, ``.npy``, CSV), checked
against the limits and stored once by content."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any, BinaryIO

import numpy as np

from service.domain.datasets import arrays, files
from service.domain.limits import Limits
from service.domain.records import DatasetResource, Page, expires_after, now, versions
from service.errors import InvalidInput, NotFound
from service.schemas.data import DataSpec, GeneratorSpec
from service.store.base import DatasetStore
from service.store.signing import StoredRows


def _resource(meta: dict[str, Any]) -> DatasetResource:
    n_samples, n_features = meta["shape"]
    return {
        "id": meta["id"],
        "name": meta.get("name"),
        "n_samples": n_samples,
        "n_features": n_features,
        "dtype": meta["dtype"],
        "sha256": meta["id"],
        "created_at": meta["created_at"],
        "expires_at": meta.get("expires_at"),
    }


class Datasets:
    """The datasets of one store, and every request's data turned into an array."""

    def __init__(self, store: DatasetStore, limits: Limits) -> None:
        self._store = store
        self.limits = limits

    # -- a request's data ---------------------------------------------------------
    def generate(self, spec: GeneratorSpec) -> arrays.Dataset:
        return arrays.generate(spec, self.limits, ["body"])

    def resolve(self, data: DataSpec, loc: tuple[str, ...] = ("body", "data")) -> arrays.Dataset:
        """Points, a generator or a stored dataset's id, as a checked float64 array."""
        return arrays.resolve(data, self.limits, loc, self._store.load_dataset)

    def points(self, points: list[list[float]] | np.ndarray, loc: Any, width: int) -> np.ndarray:
        """Points for a model ``width`` features wide, as float64; errors name ``loc``
        (JSON ``["body", "points"]``, or ``["body"]`` for a whole ``.npy`` body)."""
        return arrays.points_to_array(points, self.limits, loc, width=width)

    def read_npy(self, body: BinaryIO | files.Buffer) -> np.ndarray:
        """A ``.npy`` body of points (a file, or bytes in memory, which the array then
        shares), under the same limits as JSON points."""
        return files.read_npy(body, self.limits)

    def rows(self, data: DataSpec) -> tuple[arrays.Dataset, StoredRows]:
        """The request's data as a stored dataset workers read in chunks (engine dask).

        A stored one is not loaded here; points or a generator in the body are stored
        first. The ``Dataset`` holds only the shape of the points (zero strides, no
        memory): the rows stay in the store.
        """
        if data.dataset_id is None:
            dataset = self.resolve(data)
            dataset_id = self.create(dataset.X, inline=True)[0]["id"]
        else:
            dataset = arrays.Dataset(np.empty((0, 0)), dataset_id=data.dataset_id)
            dataset_id = data.dataset_id
        try:
            rows = self._store.dataset_rows(dataset_id)
        except NotFound:
            raise InvalidInput.at(
                ["body", "data", "dataset_id"],
                f"no dataset with id {dataset_id!r}; upload it with POST /v1/datasets.",
                "unknown_dataset",
            ) from None
        n_samples, n_features = rows.shape
        arrays.check_features(n_features, self.limits, ["body", "data"])
        shape_only = np.lib.stride_tricks.as_strided(
            np.zeros(1), shape=(n_samples, n_features), strides=(0, 0), writeable=False
        )
        return replace(dataset, X=shape_only, dataset_id=dataset_id), rows

    # -- stored datasets ----------------------------------------------------------
    def kept(self, dataset: arrays.Dataset) -> arrays.Dataset:
        """The same points stored, and read back as a read-only memory map: what work
        that waits in a queue holds instead of the array (no memory of its own)."""
        if dataset.dataset_id is not None:
            return dataset
        meta, _ = self.create(dataset.X, inline=True)
        X = self._store.load_dataset(meta["id"])
        return dataclasses.replace(dataset, X=X, dataset_id=meta["id"])

    def release(self, dataset_id: str | None) -> None:
        """Work that stored its body's points (``inline``) and then was refused or
        failed: delete them, unless a model, a job or an upload holds them since."""
        self._store.release_datasets([dataset_id])

    def create(
        self,
        X: np.ndarray,
        *,
        name: str | None = None,
        ttl_seconds: int | None = None,
        inline: bool = False,
    ) -> tuple[DatasetResource, bool]:
        """Store ``X`` (n_samples, n_features) as float64 unless the same array is
        stored already; answers the dataset resource and whether it is new. A repeat
        keeps the first upload's ``name``, ``created_at`` and ``expires_at``.
        ``inline``: the points came in a fit's body, and are deleted once no model or
        job refers to them (``DatasetStore.put_dataset``)."""
        X = files.to_float64(X)
        files.require_finite(X)
        expires_at = None if ttl_seconds is None else expires_after(ttl_seconds)
        meta, created = self._store.put_dataset(
            X,
            {"name": name, "created_at": now(), "expires_at": expires_at, "versions": versions()},
            inline=inline,
        )
        return _resource(meta), created

    def upload(
        self,
        media_type: str,
        body: BinaryIO,
        *,
        csv_header: bool | None = None,
        name: str | None,
        ttl_seconds: int | None = None,
    ) -> tuple[DatasetResource, bool]:
        """A ``.npy`` or CSV body (a file object) parsed and stored: see ``create``."""
        if media_type == files.NPY_MEDIA_TYPE:
            X = files.read_npy(body, self.limits)
        else:
            X = files.read_csv(body, self.limits, header=csv_header)
        return self.create(X, name=name, ttl_seconds=ttl_seconds)

    def create_from_spec(
        self, data: DataSpec, *, name: str | None, ttl_seconds: int | None = None
    ) -> tuple[DatasetResource, bool]:
        """JSON ``points`` or a ``generator`` stored as a dataset (labels are not kept)."""
        return self.create(self.resolve(data, ("body",)).X, name=name, ttl_seconds=ttl_seconds)

    def get(self, dataset_id: str) -> DatasetResource:
        return _resource(self._store.get_dataset_metadata(dataset_id))

    def list(self, *, limit: int, cursor: str | None) -> Page:
        items, next_cursor = self._store.list_datasets(limit=limit, cursor=cursor)
        return {
            "items": [_resource(m) for m in items],
            "next_cursor": next_cursor,
            "total": self._store.count_datasets(),
        }

    def delete(self, dataset_id: str) -> None:
        """Models fitted on the dataset keep their own reference and keep working."""
        self._store.delete_dataset(dataset_id)
