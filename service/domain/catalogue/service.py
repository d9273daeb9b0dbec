"""The catalogue: every stored model's metadata, and the one writer of models.

Read, list and find, rename and tag, delete; ``save`` is the only way a model enters
the store (fits, model selection's winner, imports), so that every resource has the
same fields in the same order and every metadata file records the library versions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson

from service.domain.catalogue.loaded import LoadedModel, LoadedModels
from service.domain.limits import Limits
from service.domain.records import (
    Bundle,
    ModelMetadata,
    ModelResource,
    Page,
    expires_after,
    jsonable,
    now,
)
from service.domain.records import versions as library_versions
from service.domain.training.estimators import large_attributes
from service.errors import InvalidInput, NotFound
from service.ids import check_id, new_model_id
from service.schemas.models import LIST_OMITS, MAX_TAGS
from service.store.base import ALL_MODELS, ModelQuery, ModelStore

#: A stored model's metadata says so when its resource's ``LIST_OMITS`` arrays are read
#: from its estimator rather than from the row (see ``Catalogue.get``).
ARRAYS_IN_ARTIFACT = "arrays_in_artifact"

#: Past this many bytes of JSON, a model's ``LIST_OMITS`` arrays stay out of its
#: catalogue row (``ARRAYS_IN_ARTIFACT``). Below it (most models: 4 x 2 x 2 full
#: covariances are a few hundred bytes) the row holds the whole resource, so that GET
#: of a model reads no artifact and goes on while the object store is down; above it,
#: a row, and each listing page that reads rows, stays small whatever the model's size
#: (16 x 1000 x 1000 covariances were 771 MB per page).
ROW_ARRAYS_MAX_BYTES = 64 * 1024


def _arrays_bytes(resource: Mapping[str, Any]) -> int:
    arrays = {key: resource[key] for key in LIST_OMITS if key in resource}
    return len(orjson.dumps(arrays)) if arrays else 0


def _resource(meta: Mapping[str, Any]) -> ModelResource:
    """The public resource of stored metadata; models stored before tags existed have
    none (``{}``)."""
    resource = cast(ModelResource, meta["resource"])
    if "tags" not in resource:
        resource = cast(ModelResource, {**resource, "tags": {}})
    return resource


def _summary(resource: ModelResource) -> ModelResource:
    """The resource as a listing shows it: without ``LIST_OMITS``, the arrays whose size
    grows as n_components x n_features^2 (a page of such models would weigh gigabytes)."""
    return cast(ModelResource, {k: v for k, v in resource.items() if k not in LIST_OMITS})


def merge_patch(current: dict[str, str], patch: Mapping[str, str | None] | None) -> dict[str, str]:
    """RFC 7396 on a flat map of strings: a string sets its key, null removes it, an
    absent key stays; a null ``patch`` removes them all."""
    if patch is None:
        return {}
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class Catalogue:
    """The models of one ``ModelStore``, and this worker's cache of loaded ones."""

    def __init__(self, store: ModelStore, loaded: LoadedModels, limits: Limits) -> None:
        self._store = store
        self._loaded = loaded
        #: What an imported model may hold (``portable.import_model``).
        self.limits = limits

    # -- reading ------------------------------------------------------------------
    def get_metadata(self, model_id: str) -> ModelMetadata:
        """The stored metadata: ``resource``, ``versions`` and, for imports, ``imported_from``."""
        return cast(ModelMetadata, self._store.get_metadata(check_id(model_id)))

    def get(self, model_id: str) -> ModelResource:
        """The whole resource. A mixture's ``LIST_OMITS`` arrays are read from its
        fitted estimator (this worker's cache of loaded models, else the artifact),
        where models stored since they left the catalogue row keep them."""
        meta = self.get_metadata(model_id)
        return self._whole(model_id, meta)

    def stored(self, model_id: str) -> ModelResource:
        """The resource as the catalogue row holds it: without the ``LIST_OMITS``
        arrays of a mixture (``estimators.large_attributes``), so reading it loads no
        artifact. What the hot paths need (``n_features``, ``algorithm``, ``means``)."""
        return _resource(self.get_metadata(model_id))

    def _whole(self, model_id: str, meta: Mapping[str, Any]) -> ModelResource:
        resource = _resource(meta)
        if not meta.get(ARRAYS_IN_ARTIFACT):
            return resource  # a k-means, or stored before the arrays left the row
        estimator = self._loaded.get(model_id).bundle["estimator"]
        return cast(ModelResource, {**resource, **jsonable(large_attributes(estimator))})

    def loaded(self, model_id: str) -> LoadedModel:
        """The model as prediction uses it, from this worker's cache when it can be."""
        return self._loaded.get(model_id)

    def ready(self, model_id: str) -> bool:
        """Whether answering with the model needs no read that may block (see ``LoadedModels``)."""
        return self._loaded.ready(model_id) is not None

    def ready_resource(self, ref: str) -> ModelResource | None:
        """The resource of the model id ``ref`` when it is ``ready``, else None (a name,
        or a model that needs a read): ``find`` without a lookup of its own."""
        hit = self._loaded.ready(ref)
        return None if hit is None else hit.resource

    def load_bundle(self, model_id: str) -> tuple[ModelResource, Bundle]:
        """The resource and the stored bundle with ``X``: a read-only memory map of the
        training dataset the model refers to, or the array pickled into bundles stored
        before datasets existed, or None (imports)."""
        bundle = self._loaded.get(model_id).bundle
        # Read afresh: the name and tags may have changed since the bundle was cached.
        resource = self.get(model_id)
        if "X" not in bundle:
            points = self._store.load_points(model_id) if bundle.get("dataset_id") else None
            bundle = {**bundle, "X": points}  # the cached bundle stays as stored
        return resource, bundle

    def find(self, ref: str) -> ModelResource:
        """The resource of the model ``ref`` names: a model id, or else a model ``name``
        (the newest model of that name, as a name is a free label, not unique).

        For clients that address models by a name they chose, such as the Open
        Inference Protocol's ``/v2/models/{name}``. An id of a cached model costs no
        read while it is known to be stored (the hot path of ``infer``); a name one
        indexed query for the newest model of that name. ``NotFound`` when neither an id
        nor a name matches.
        """
        try:
            check_id(ref)
        except NotFound:
            pass
        else:
            hit = self._loaded.cached(ref)
            if hit is not None:
                return hit.resource
            with contextlib.suppress(NotFound):  # a name may look like an id
                return self.stored(ref)
        items, _ = self._store.list(ModelQuery(name=ref), limit=1, cursor=None)
        if not items:
            raise NotFound(f"No model with id or name {ref!r}.")
        return _resource(items[0])

    def list(
        self,
        *,
        limit: int,
        cursor: str | None,
        name: str | None = None,
        algorithm: str | None = None,
        tags: Sequence[str] = (),
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
    ) -> Page:
        """A page of model resources, newest first, read from metadata alone (no model
        is unpickled). ``name``, ``algorithm``, ``tags`` and the creation times (see
        ``ModelQuery``) narrow the listing; the page, ``next_cursor`` and ``total`` are
        then those of the models that match. Each is an indexed query."""
        query = ModelQuery(
            name=name,
            algorithm=algorithm,
            tags=tuple(tags),
            created_after=created_after,
            created_before=created_before,
        )
        items, next_cursor = self._store.list(query, limit=limit, cursor=cursor)
        return {
            "items": [_summary(_resource(m)) for m in items],
            "next_cursor": next_cursor,
            "total": self._store.count(query),
        }

    # -- writing ------------------------------------------------------------------
    def save(
        self,
        *,
        algorithm: str,
        params: dict[str, Any],
        name: str | None,
        n_samples: int | None,
        n_features: int,
        fit_seconds: float,
        warnings: list[dict[str, str]],
        attributes: dict[str, Any],
        bundle: Bundle,
        imported: bool = False,
        imported_from: dict[str, Any] | None = None,
        dataset_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        ttl_seconds: int | None = None,
    ) -> ModelResource:
        """Give a model its id and creation time, store it, and answer its resource.

        ``attributes`` are the fitted attributes (``estimators.describe``) and anything
        else the resource shows; ``bundle`` holds the estimator and, for a fitted model,
        its training ``dataset_id``, ``labels`` and sorted ``train_log_likelihood``
        (None each for an import). ``dataset_id`` names the stored dataset of the
        training points: the store gives the model its own reference to them
        (``NotFound`` when the dataset is gone). With ``ttl_seconds`` the resource
        carries ``expires_at`` and the housekeeping deletes the model then. ``name``,
        ``tags`` and ``expires_at`` are the only fields that change afterwards
        (``update``).
        """
        resource: dict[str, Any] = {
            "id": new_model_id(),
            "name": name,
            "tags": dict(tags or {}),
            "algorithm": algorithm,
            "params": params,
            "created_at": now(),
            "expires_at": None if ttl_seconds is None else expires_after(ttl_seconds),
            "n_samples": n_samples,
            "n_features": n_features,
            "fit_seconds": fit_seconds,
            "warnings": warnings,
            "imported": imported,
            "dataset_id": dataset_id,
            **attributes,
        }
        resource = jsonable(resource)
        metadata: dict[str, Any] = {"resource": resource, "versions": library_versions()}
        if _arrays_bytes(resource) > ROW_ARRAYS_MAX_BYTES:
            # The row keeps the summary; the arrays stay in the artifact's estimator.
            metadata = {**metadata, "resource": _summary(resource), ARRAYS_IN_ARTIFACT: True}
        if imported_from is not None:
            metadata["imported_from"] = imported_from
        self._store.put(resource["id"], bundle, metadata, dataset_id=dataset_id)
        return cast(ModelResource, resource)

    def update(
        self,
        model_id: str,
        *,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        ttl_seconds: int | None = None,
        fields: set[str],
    ) -> ModelResource:
        """Rename a model and/or merge-patch its tags (RFC 7396); answers the resource.

        ``fields`` names what the patch holds (``name``, ``tags``), so that a null
        ``name`` (remove it) differs from none given (keep it), and a null ``tags``
        removes every tag. The merge happens inside the store's per-model lock, so two
        concurrent patches never lose one another's change. Only the metadata is
        rewritten (signed again); the fitted model is untouched. ``NotFound`` when the
        model is, or becomes, deleted.
        """
        loc_tags = ["body", "tags"]

        def change(meta: dict[str, Any]) -> dict[str, Any] | None:
            resource = _resource(meta)
            updated = dict(resource)
            if "name" in fields:
                updated["name"] = name
            if "tags" in fields:
                merged = merge_patch(resource["tags"], tags)
                if len(merged) > MAX_TAGS:
                    raise InvalidInput.at(
                        loc_tags,
                        f"the model would have {len(merged)} tags; at most {MAX_TAGS} are "
                        "allowed: remove some with null values in the same patch.",
                        "too_many_tags",
                    )
                updated["tags"] = merged
            if "ttl_seconds" in fields:
                updated["expires_at"] = None if ttl_seconds is None else expires_after(ttl_seconds)
            if updated == resource:
                return None  # nothing to write: the file and its signature stay
            return {**meta, "resource": updated}

        meta = self._store.update_metadata(check_id(model_id), change)
        self._loaded.renamed(model_id, _resource(meta))
        return self._whole(model_id, meta)

    def delete(self, model_id: str) -> None:
        self._store.delete(check_id(model_id))
        self._loaded.forget(model_id)

    # -- operations ---------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread that keeps models in memory confirmed (``LoadedModels``)."""
        self._loaded.close()

    def check_store(self) -> None:
        """Readiness: ``StoreUnavailable`` (503) unless a write round-trip succeeds."""
        self._store.check_writable()

    def stats(self) -> dict[str, int]:
        """What ``/metrics`` reports about the store: models, bytes, and the hits and
        misses of this worker's cache of loaded models."""
        return {
            "models": self._store.count(ALL_MODELS),
            "bytes": self._store.total_bytes(),
            "cache_hits": self._loaded.hits,
            "cache_misses": self._loaded.misses,
        }
