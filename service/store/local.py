"""The embedded store: one folder per model on local disk.

Layout under ``root``::

    secret.key                 # 0600, generated once when GMM_SECRET_KEY is unset
    models/<id>/model.joblib   # the pickled estimator
    models/<id>/meta.json      # resource metadata, checksums and HMAC signature
    models/<id>/data.npy       # hard link to the training dataset's data.npy
    datasets/<sha256>/data.npy # float64, C order: read back as a read-only memory map
    datasets/<sha256>/meta.json
    jobs/<id>.json             # job resources of long work (written whole, by rename)
    tmp/                       # folders being written or deleted

A model is written into ``tmp/<pid>-<random>/`` (files fsynced), then the folder is
renamed to ``models/<id>`` in one atomic step: a crash leaves either the whole model
or nothing visible. A delete renames the folder back into ``tmp/`` before removing
it, so it vanishes for every process at once. Leftovers of dead processes in
``tmp/`` are removed at start.

A metadata update (rename, tags) holds an exclusive ``flock`` on the model's folder
(every thread and process alike), writes the re-signed ``meta.json`` into ``tmp/``
and renames it over the old one: readers see the old or the new file, never half of
one. A delete needs no lock: once it has renamed the folder away, the update's
rename into ``models/<id>/`` finds no folder and fails, so a deleted model is never
brought back.

Datasets are content-addressed: the folder name is the sha256 of the array's canonical
bytes (``array_sha256``), so two uploads of one array race to the same rename and one
copy is kept. A model keeps its own hard link to its training points: deleting the
dataset frees nothing a model still uses, and the bytes go with the last holder
(a file system without hard links gets a copy instead).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from service.caching import LockedLRU
from service.errors import ArtifactIntegrityError, NotFound, StoreUnavailable
from service.ids import check_dataset_id, check_id, check_job_id
from service.store.base import MetadataChange, ModelListing, array_sha256, page_datasets, page_jobs
from service.store.signing import (
    ARTIFACT,
    DATA,
    HEADER_BYTES,
    META,
    Signer,
    StoredRows,
    canonical_json,
    npy_data_offset,
    open_npy,
)

__all__ = ["ARTIFACT", "DATA", "META", "LocalModelStore", "canonical_json", "load_or_create_key"]

#: Files whose content hash was checked, by (device, inode, size, mtime): a dataset of
#: a gigabyte is hashed once per process, not on every fit or plot.
_VERIFIED_CACHE = 4096


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # a junk name may hold a huge "pid"
        return False
    except PermissionError:
        return True
    return True


_process_token: tuple[int, str] | None = None


def _boot_token() -> str:
    """A random token for this process, new in every process (forked children too).

    Shared by every store this process opens: a second store in the same process
    must not take the first one's writes in flight for a dead process's leftovers.
    """
    global _process_token
    pid = os.getpid()
    if _process_token is None or _process_token[0] != pid:
        _process_token = (pid, secrets.token_hex(4))
    return _process_token[1]


def load_or_create_key(root: Path, configured: str | None) -> bytes:
    """The signing key: the configured one, else one generated once into the store.

    ``O_EXCL`` makes concurrent first starts (``--workers 2``) agree on one key.
    """
    if configured:
        return configured.encode()
    path = root / "secret.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):  # another process may be between create and write
            key = path.read_bytes().strip()
            if key:
                return key
            threading.Event().wait(0.01)
        raise StoreUnavailable(f"Signing key file {path.name} in the store is empty.") from None
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


class LocalModelStore(ModelListing):
    """Models on local disk, signed, written atomically, cached in a bounded LRU."""

    #: ``exists`` is a stat of a local folder: cheap enough for the event loop.
    local_io = True

    def __init__(self, root: Path, *, secret_key: str | None = None, cache_size: int = 64):
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.datasets_dir = self.root / "datasets"
        self.tmp_dir = self.root / "tmp"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._signer = Signer(load_or_create_key(self.root, secret_key))
        self._cache: LockedLRU[str, Any] = LockedLRU(cache_size)
        self._verified: LockedLRU[tuple[int, int, int, int, str], bool] = LockedLRU(_VERIFIED_CACHE)
        self.cleanup()

    @property
    def cache_hits(self) -> int:
        return self._cache.hits

    @property
    def cache_misses(self) -> int:
        return self._cache.misses

    # -- housekeeping -------------------------------------------------------------
    def cleanup(self) -> int:
        """Remove half-written or half-deleted folders left by processes that died.

        Temp names carry ``<pid>-<boot token>``: a live pid with another boot token is
        a recycled pid (PID 1 in every container start), so its leftovers go too.
        """
        removed = 0
        for entry in self.tmp_dir.iterdir():
            pid_text, _, rest = entry.name.partition("-")
            boot = rest.partition("-")[0]
            live = pid_text.isdigit() and _pid_alive(int(pid_text))
            if live and (int(pid_text) != os.getpid() or boot == _boot_token()):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed

    def _tmp_path(self) -> Path:
        return self.tmp_dir / f"{os.getpid()}-{_boot_token()}-{secrets.token_hex(8)}"

    def _sign(self, payload: bytes) -> str:
        return self._signer.sign(payload)

    def _model_dir(self, model_id: str) -> Path:
        return self.models_dir / check_id(model_id)

    # -- writes -------------------------------------------------------------------
    def put(
        self,
        model_id: str,
        estimator: Any,
        metadata: dict[str, Any],
        *,
        dataset_id: str | None = None,
    ) -> dict[str, Any]:
        final = self._model_dir(model_id)
        points_src: Path | None = None
        buf = io.BytesIO()
        joblib.dump(estimator, buf)
        blob = buf.getvalue()
        meta = dict(metadata)
        meta["id"] = model_id
        meta["artifact"] = self._signer.artifact(model_id, blob)
        if dataset_id is not None:
            dataset = self._read_dataset_meta(dataset_id)  # NotFound when it is gone
            points_src = self._dataset_dir(dataset_id) / DATA
            meta["points"] = {"file": DATA, "sha256": dataset_id, "shape": dataset["shape"]}
        meta.pop("signature", None)
        meta["signature"] = self._sign(canonical_json(meta))
        tmp = self._tmp_path()
        try:
            tmp.mkdir()
            if points_src is not None:
                self._link_points(points_src, tmp / DATA, dataset_id or "")
            _write_file(tmp / ARTIFACT, blob)
            _write_file(tmp / META, canonical_json(meta))
            _fsync_dir(tmp)
            os.rename(tmp, final)  # atomic: the model appears whole or not at all
            _fsync_dir(self.models_dir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise StoreUnavailable(f"Model id {model_id} already exists.") from exc
            raise StoreUnavailable(f"Could not write the model: {exc.strerror}.") from exc
        return meta

    def _link_points(self, src: Path, dst: Path, dataset_id: str) -> None:
        """The model's own reference to the dataset's bytes: a hard link (no copy), or
        a copy where the file system has no hard links."""
        try:
            os.link(src, dst)
        except FileNotFoundError:
            shutil.rmtree(dst.parent, ignore_errors=True)
            raise NotFound(f"No dataset with id {dataset_id!r}.") from None
        except OSError:
            shutil.copyfile(src, dst)
            with open(dst, "rb") as fh:
                os.fsync(fh.fileno())

    def delete(self, model_id: str) -> None:
        src = self._model_dir(model_id)
        trash = self._tmp_path()
        try:
            os.rename(src, trash)  # atomic: gone for every process from here on
        except FileNotFoundError:
            raise NotFound(f"No model with id {model_id!r}.") from None
        except OSError as exc:
            raise StoreUnavailable(f"Could not delete the model: {exc.strerror}.") from exc
        self._cache.pop(model_id)
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            _fsync_dir(self.models_dir)

    @contextlib.contextmanager
    def _locked(self, model_id: str) -> Iterator[Path]:
        """An exclusive lock on the model's folder for a read-modify-write of its
        metadata. ``flock`` on the folder itself: no lock file to create or clean up,
        and it excludes other threads (each opens its own descriptor) and processes
        alike. It stays on the folder's inode if a delete renames it away meanwhile."""
        folder = self._model_dir(model_id)
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"No model with id {model_id!r}.") from None
        except OSError as exc:
            raise StoreUnavailable(f"Could not lock the model: {exc.strerror}.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield folder
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    def update_metadata(self, model_id: str, change: MetadataChange) -> dict[str, Any]:
        with self._locked(model_id) as folder:
            meta = self._read_meta(model_id)  # verified: a tampered file is never re-signed
            new = change(json.loads(canonical_json(meta)))  # change works on a copy
            if new is None:
                return meta
            for key in ("id", "artifact", "points"):
                if new.get(key) != meta.get(key):
                    raise ValueError(f"a metadata update may not change {key!r}")
            new = dict(new)
            new.pop("signature", None)
            new["signature"] = self._sign(canonical_json(new))
            tmp = self._tmp_path()
            try:
                _write_file(tmp, canonical_json(new))
                # Atomic over the old file. When a delete has renamed the folder away,
                # models/<id>/ no longer exists and this fails: the model stays deleted.
                os.rename(tmp, folder / META)
            except FileNotFoundError:
                tmp.unlink(missing_ok=True)
                raise NotFound(f"No model with id {model_id!r}.") from None
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                raise StoreUnavailable(
                    f"Could not write the model's metadata: {exc.strerror}."
                ) from exc
            with contextlib.suppress(OSError):  # gone already if a delete just won
                _fsync_dir(folder)
        return new

    def check_writable(self) -> None:
        probe = self._tmp_path()
        try:
            _write_file(probe, b"ok")
            probe.unlink()
            # A model is published by a rename into models/: that must be a writable folder.
            with os.scandir(self.models_dir):
                pass
            if not os.access(self.models_dir, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        except OSError as exc:
            raise StoreUnavailable(f"The model store is not writable: {exc.strerror}.") from exc

    # -- reads --------------------------------------------------------------------
    def _read_signed(self, folder: Path, kind: str, item_id: str) -> dict[str, Any]:
        """A folder's ``meta.json``, verified against its signature and its id."""
        try:
            raw = (folder / META).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"No {kind} with id {item_id!r}.") from None
        except IsADirectoryError:  # a damaged folder, not a missing item
            raise ArtifactIntegrityError(
                f"The metadata of {kind} {item_id} is not a file."
            ) from None
        return self._signer.verify_meta(raw, kind, item_id)

    def _read_meta(self, model_id: str) -> dict[str, Any]:
        return self._read_signed(self._model_dir(model_id), "model", model_id)

    def get_metadata(self, model_id: str) -> dict[str, Any]:
        return self._read_meta(model_id)

    def exists(self, model_id: str) -> bool:
        # A delete renames the folder away in one step, for every process at once.
        return os.path.isdir(self._model_dir(model_id))

    def load(self, model_id: str) -> Any:
        folder = self._model_dir(model_id)
        cached = self._cache.get(model_id)
        if cached is not None:
            # A delete by another worker removes the folder: never serve it stale.
            if folder.is_dir():
                return cached
            self._cache.pop(model_id)
        meta = self._read_meta(model_id)
        art = meta.get("artifact") or {}
        try:
            blob = (folder / ARTIFACT).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"No model with id {model_id!r}.") from None
        except IsADirectoryError:  # a damaged folder, not a missing model
            raise ArtifactIntegrityError(
                f"The artifact of model {model_id} is not a file and was not loaded."
            ) from None
        self._signer.verify_artifact(model_id, blob, art)
        estimator = joblib.load(io.BytesIO(blob))  # only ever verified bytes
        self._cache.put(model_id, estimator)
        return estimator

    def _ids(self) -> list[str]:
        return sorted((e.name for e in os.scandir(self.models_dir) if e.is_dir()), reverse=True)

    def total_bytes(self) -> int:
        """Bytes of all artifacts, from the file system (no metadata is read)."""
        total = 0
        for model_id in self._ids():
            with contextlib.suppress(OSError):
                total += (self.models_dir / model_id / ARTIFACT).stat().st_size
        return total

    # -- points shared by datasets and models --------------------------------------
    def _open_points(self, path: Path, sha256: str, shape: list[int], what: str) -> np.ndarray:
        """A read-only memory map of a stored ``data.npy``, checked against the hash its
        signed metadata names (once per file and process: see ``_VERIFIED_CACHE``).

        Never unpickles: the magic is checked first and ``allow_pickle=False``.
        """
        try:
            st = os.stat(path)  # before the open: the key names the inode that was mapped
        except FileNotFoundError:
            raise NotFound(f"No {what}.") from None
        except OSError as exc:
            raise ArtifactIntegrityError(f"The points of {what} are unreadable: {exc}.") from None
        X = open_npy(path, shape, what)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, sha256)
        if key not in self._verified:
            if array_sha256(X) != sha256:
                raise ArtifactIntegrityError(
                    f"The points of {what} failed their integrity check and were not used."
                )
            self._verified.put(key, True)
        return X

    def load_points(self, model_id: str) -> np.ndarray | None:
        points = self._read_meta(model_id).get("points")
        if not points:
            return None
        return self._open_points(
            self._model_dir(model_id) / DATA,
            points["sha256"],
            points["shape"],
            f"the training points of model {model_id}",
        )

    # -- datasets ---------------------------------------------------------------------
    def _dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / check_dataset_id(dataset_id)

    def _read_dataset_meta(self, dataset_id: str) -> dict[str, Any]:
        return self._read_signed(self._dataset_dir(dataset_id), "dataset", dataset_id)

    def put_dataset(self, X: np.ndarray, metadata: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        X = np.ascontiguousarray(X, dtype=np.dtype("<f8"))
        dataset_id = array_sha256(X)
        final = self._dataset_dir(dataset_id)
        with contextlib.suppress(NotFound):
            return self._read_dataset_meta(dataset_id), False
        meta = dict(metadata)
        meta.pop("signature", None)
        meta.update(
            id=dataset_id,
            shape=[int(n) for n in X.shape],
            dtype="float64",
            file=DATA,
            created_ns=time.time_ns(),
        )
        meta["signature"] = self._sign(canonical_json(meta))
        tmp = self._tmp_path()
        try:
            tmp.mkdir()
            with open(tmp / DATA, "wb") as fh:
                np.lib.format.write_array(fh, X, version=(1, 0), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            _write_file(tmp / META, canonical_json(meta))
            _fsync_dir(tmp)
            os.rename(tmp, final)  # atomic; of two racing uploads, one rename wins
            _fsync_dir(self.datasets_dir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return self._read_dataset_meta(dataset_id), False  # the same array won
            raise StoreUnavailable(f"Could not write the dataset: {exc.strerror}.") from exc
        st = os.stat(final / DATA)  # written and hashed just now
        self._verified.put((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, dataset_id), True)
        return meta, True

    def get_dataset_metadata(self, dataset_id: str) -> dict[str, Any]:
        return self._read_dataset_meta(dataset_id)

    def load_dataset(self, dataset_id: str) -> np.ndarray:
        meta = self._read_dataset_meta(dataset_id)
        return self._open_points(
            self._dataset_dir(dataset_id) / DATA, dataset_id, meta["shape"], f"dataset {dataset_id}"
        )

    def dataset_rows(self, dataset_id: str) -> LocalRows:
        meta = self._read_dataset_meta(dataset_id)
        path = self._dataset_dir(dataset_id) / DATA
        n_samples, n_features = meta["shape"]
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEADER_BYTES)
        except FileNotFoundError:
            raise NotFound(f"No dataset with id {dataset_id!r}.") from None
        offset = npy_data_offset(head, meta["shape"], f"dataset {dataset_id}")
        return LocalRows(str(path.resolve()), n_samples, n_features, offset)

    def _dataset_ids(self) -> list[str]:
        ids = []
        for entry in os.scandir(self.datasets_dir):
            with contextlib.suppress(NotFound):
                if entry.is_dir():
                    ids.append(check_dataset_id(entry.name))
        return ids

    def list_datasets(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first. Content-addressed ids do not sort by time, so every metadata
        file is read (small, and never the arrays) and sorted by creation time."""
        return page_datasets(
            self._dataset_ids(), self._read_dataset_meta, limit=limit, cursor=cursor
        )

    def count_datasets(self) -> int:
        return len(self._dataset_ids())

    def delete_dataset(self, dataset_id: str) -> None:
        """Models fitted on it keep their own link to the points and keep working."""
        src = self._dataset_dir(dataset_id)
        trash = self._tmp_path()
        try:
            os.rename(src, trash)  # atomic: gone for every process from here on
        except FileNotFoundError:
            raise NotFound(f"No dataset with id {dataset_id!r}.") from None
        except OSError as exc:
            raise StoreUnavailable(f"Could not delete the dataset: {exc.strerror}.") from exc
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            _fsync_dir(self.datasets_dir)

    # -- jobs ---------------------------------------------------------------------
    # A job is one small JSON file, rewritten whole at every change: written to tmp/
    # (fsynced), then renamed over the previous copy, so a reader in any process sees
    # one complete version or the one before, never a half-written file. Jobs are not
    # signed: nothing in them is ever unpickled, and a model they name is verified
    # when it is read.

    def _job_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{check_job_id(job_id)}.json"

    def put_job(self, job: dict[str, Any]) -> None:
        final = self._job_path(job["id"])
        tmp = self._tmp_path()
        try:
            _write_file(tmp, json.dumps(job, allow_nan=False).encode())
            os.replace(tmp, final)  # atomic, also over the previous copy
            _fsync_dir(self.jobs_dir)
        except OSError as exc:
            with contextlib.suppress(OSError):  # the tmp folder itself may be what failed
                tmp.unlink(missing_ok=True)
            raise StoreUnavailable(f"Could not write the job: {exc.strerror}.") from exc

    def get_job(self, job_id: str) -> dict[str, Any]:
        path = self._job_path(job_id)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"No job with id {job_id!r}.") from None
        except IsADirectoryError:
            raise ArtifactIntegrityError(f"The record of job {job_id} is not a file.") from None
        try:
            job = json.loads(raw)
        except ValueError:
            raise ArtifactIntegrityError(f"The record of job {job_id} is unreadable.") from None
        if not isinstance(job, dict) or job.get("id") != job_id:
            raise ArtifactIntegrityError(f"The record stored for job {job_id} is another's.")
        return job

    def job_ids(self) -> list[str]:
        """Every stored job id, newest first (ids sort by creation time)."""
        names = (e.name for e in os.scandir(self.jobs_dir) if e.name.endswith(".json"))
        return sorted((n[: -len(".json")] for n in names), reverse=True)

    def list_jobs(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return page_jobs(self.job_ids(), self.get_job, limit=limit, cursor=cursor)


class LocalRows(StoredRows):
    """Rows of a dataset in a local store: readable by workers that share its disk
    (a LocalCluster, or workers mounting the same volume)."""

    def __init__(self, path: str, n_samples: int, n_features: int, offset: int) -> None:
        super().__init__(n_samples, n_features, offset)
        self.path = path

    def _read(self, offset: int, size: int) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                return fh.read(size)
        except FileNotFoundError:
            raise NotFound(
                f"The dataset file {self.path} is not on this machine: Dask workers reading "
                "a local store must share its disk (or use GMM_STORE_URL=s3://...)."
            ) from None
