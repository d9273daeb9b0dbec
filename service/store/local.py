"""The embedded object store: artifacts in folders on local disk.

Layout under ``root``::

    secret.key                         # 0600, generated once when GMM_SECRET_KEY is unset
    catalogue.db                       # the metadata (SQLite), unless GMM_DATABASE_URL
    models/<id>/model.joblib           # the pickled estimator
    models/<id>/data.npy               # hard link to the training dataset's file
    datasets/<sha256>/data-<token>.npy # float64, C order: read back as a read-only map
    tmp/                               # files and folders being written or deleted

A model's folder is written into ``tmp/<pid>-<boot>-<random>/`` (files fsynced) and
renamed to ``models/<id>`` in one atomic step, before its row is committed: a crash
leaves a whole folder without a row (an orphan, which the sweeper removes) or
nothing. A delete renames the folder back into ``tmp/`` before removing it.
Leftovers of dead processes in ``tmp/`` are removed at start.

Each upload of a dataset writes a data file of its own (``data-<token>.npy``): a
delete racing a new upload of the same array removes only the file its row named.
A model keeps its own hard link to its training points: deleting the dataset frees
nothing a model still uses (a file system without hard links gets a copy instead).

Stores written before the catalogue moved into a database also hold
``models/<id>/meta.json``, ``datasets/<sha256>/meta.json`` (naming ``data.npy``) and
``jobs/<id>.json``: ``legacy_records`` hands them to the one-time import.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from service.caching import LockedLRU
from service.errors import ArtifactIntegrityError, NotFound, StoreUnavailable
from service.ids import check_dataset_id, check_id
from service.store.base import LegacyRecord, StoredItem, array_sha256
from service.store.os_errors import os_error_reason
from service.store.signing import (
    ARTIFACT,
    DATA,
    HEADER_BYTES,
    META,
    StoredRows,
    npy_data_offset,
    open_npy,
)

__all__ = ["LocalArtifacts", "load_or_create_key"]

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


class _Stream:
    """A file as numpy sees any stream: something with ``write`` and no ``fileno``.

    Given a real file, ``np.lib.format.write_array`` writes the points with
    ``ndarray.tofile``, which reports a full disk as ``OSError("N requested and 0
    written")``: no errno, so the 503 said "an I/O error" where it should say "No
    space left on device". Through this, numpy writes 16 MiB chunks with the file's
    own ``write``, whose errors carry their errno.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self.write = fh.write


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
    root.mkdir(parents=True, exist_ok=True)
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


class LocalArtifacts:
    """Artifacts and datasets' points on local disk, written atomically."""

    #: Reads are of local files: cheap enough for the event loop.
    local_io = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.datasets_dir = self.root / "datasets"
        self.tmp_dir = self.root / "tmp"
        for folder in (self.models_dir, self.datasets_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._verified: LockedLRU[tuple[int, int, int, int, str], bool] = LockedLRU(_VERIFIED_CACHE)
        self.cleanup()

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

    def _model_dir(self, model_id: str) -> Path:
        return self.models_dir / check_id(model_id)

    def _dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / check_dataset_id(dataset_id)

    def check_writable(self) -> None:
        probe = self._tmp_path()
        try:
            _write_file(probe, b"ok")
            # A model is published by a rename into models/: that must be a writable folder.
            with os.scandir(self.models_dir):
                pass
            if not os.access(self.models_dir, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        except OSError as exc:
            raise StoreUnavailable(
                f"The model store is not writable: {os_error_reason(exc)}."
            ) from exc
        finally:  # a probe that failed midway (a full disk) leaves nothing behind
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)

    # -- models -------------------------------------------------------------------
    def put_model(self, model_id: str, blob: bytes, points: tuple[str, str] | None) -> None:
        """Write the model's folder whole, or nothing. ``points`` is ``(dataset id, its
        data file)``: the model gets its own link to them (``NotFound`` when gone)."""
        final = self._model_dir(model_id)
        tmp = self._tmp_path()
        try:
            tmp.mkdir()
            if points is not None:
                dataset_id, file = points
                self._link_points(self._dataset_dir(dataset_id) / file, tmp / DATA, dataset_id)
            _write_file(tmp / ARTIFACT, blob)
            _fsync_dir(tmp)
            os.rename(tmp, final)  # atomic: the folder appears whole or not at all
            _fsync_dir(self.models_dir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise StoreUnavailable(f"Model id {model_id} already exists.") from exc
            raise StoreUnavailable(f"Could not write the model: {os_error_reason(exc)}.") from exc
        except NotFound:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _link_points(self, src: Path, dst: Path, dataset_id: str) -> None:
        """The model's own reference to the dataset's bytes: a hard link (no copy), or
        a copy where the file system has no hard links."""
        try:
            os.link(src, dst)
        except FileNotFoundError:
            raise NotFound(f"No dataset with id {dataset_id!r}.") from None
        except OSError:
            shutil.copyfile(src, dst)
            with open(dst, "rb") as fh:
                os.fsync(fh.fileno())

    def read_model(self, model_id: str) -> bytes:
        try:
            return (self._model_dir(model_id) / ARTIFACT).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"The artifact of model {model_id} is missing.") from None
        except IsADirectoryError:  # a damaged folder, not a missing model
            raise ArtifactIntegrityError(
                f"The artifact of model {model_id} is not a file and was not loaded."
            ) from None
        except OSError as exc:
            raise StoreUnavailable(f"Could not read the model: {os_error_reason(exc)}.") from exc

    def model_points(self, model_id: str, sha256: str, shape: list[int]) -> np.ndarray:
        return self._open_points(
            self._model_dir(model_id) / DATA,
            sha256,
            shape,
            f"the training points of model {model_id}",
        )

    def delete_model(self, model_id: str) -> None:
        """Remove the folder, if it is there: rename it away first, so that no reader
        ever sees half of it."""
        trash = self._tmp_path()
        try:
            os.rename(self._model_dir(model_id), trash)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreUnavailable(f"Could not delete the model: {os_error_reason(exc)}.") from exc
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            _fsync_dir(self.models_dir)

    # -- points ---------------------------------------------------------------------
    def _open_points(self, path: Path, sha256: str, shape: list[int], what: str) -> np.ndarray:
        """A read-only memory map of a stored ``.npy``, checked against the hash its
        signed metadata names (once per file and process: see ``_VERIFIED_CACHE``).

        Never unpickles: the magic is checked first and ``allow_pickle=False``.
        """
        try:
            st = os.stat(path)  # before the open: the key names the inode that was mapped
        except FileNotFoundError:
            raise NotFound(f"No {what}.") from None
        except OSError as exc:
            raise ArtifactIntegrityError(
                f"The points of {what} are unreadable: {os_error_reason(exc)}."
            ) from None
        X = open_npy(path, shape, what)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, sha256)
        if key not in self._verified:
            if array_sha256(X) != sha256:
                raise ArtifactIntegrityError(
                    f"The points of {what} failed their integrity check and were not used."
                )
            self._verified.put(key, True)
        return X

    # -- datasets -------------------------------------------------------------------
    def put_dataset(self, dataset_id: str, X: np.ndarray) -> str:
        """Write this upload's data file; answers its name within the dataset's folder."""
        name = f"data-{secrets.token_hex(8)}.npy"
        folder = self._dataset_dir(dataset_id)
        tmp = self._tmp_path()
        try:
            with open(tmp, "wb") as fh:
                np.lib.format.write_array(_Stream(fh), X, version=(1, 0), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            for _ in range(10):  # a delete of the last file may remove the folder meanwhile
                try:
                    folder.mkdir(exist_ok=True)
                except FileExistsError:  # there at mkdir, gone by its is_dir check: again
                    continue
                try:
                    os.rename(tmp, folder / name)
                    break
                except FileNotFoundError:
                    if not tmp.exists():
                        raise
            _fsync_dir(folder)
        except OSError as exc:
            # On a read-only file system even unlinking a file that was never created
            # fails (EROFS, not ENOENT): that must not turn the 503 into a 500.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreUnavailable(f"Could not write the dataset: {os_error_reason(exc)}.") from exc
        st = os.stat(folder / name)  # written and hashed just now
        self._verified.put((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, dataset_id), True)
        return name

    def dataset_points(self, dataset_id: str, file: str, shape: list[int]) -> np.ndarray:
        return self._open_points(
            self._dataset_dir(dataset_id) / _file_name(file),
            dataset_id,
            shape,
            f"dataset {dataset_id}",
        )

    def dataset_rows(self, dataset_id: str, file: str, shape: list[int]) -> LocalRows:
        path = self._dataset_dir(dataset_id) / _file_name(file)
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEADER_BYTES)
        except FileNotFoundError:
            raise NotFound(f"No dataset with id {dataset_id!r}.") from None
        offset = npy_data_offset(head, shape, f"dataset {dataset_id}")
        return LocalRows(str(path.resolve()), shape[0], shape[1], offset)

    def delete_dataset(self, dataset_id: str, file: str) -> None:
        """Remove one data file (models keep their own links to it), and the folder
        once it is empty."""
        folder = self._dataset_dir(dataset_id)
        try:
            (folder / _file_name(file)).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"Could not delete the dataset: {os_error_reason(exc)}."
            ) from exc
        with contextlib.suppress(OSError):  # not empty: another upload's file is there
            (folder / META).unlink(missing_ok=True)
            folder.rmdir()

    # -- what the sweeper and the import read -----------------------------------------
    def stored_models(self) -> Iterator[StoredItem]:
        now = time.time()
        for entry in os.scandir(self.models_dir):
            with contextlib.suppress(NotFound, OSError):
                yield StoredItem(check_id(entry.name), "", now - entry.stat().st_mtime)

    def stored_datasets(self) -> Iterator[StoredItem]:
        now = time.time()
        for entry in os.scandir(self.datasets_dir):
            with contextlib.suppress(NotFound, OSError):
                dataset_id = check_dataset_id(entry.name)
                for file in os.scandir(entry.path):
                    if file.name.endswith(".npy"):
                        yield StoredItem(dataset_id, file.name, now - file.stat().st_mtime)

    def legacy_records(self) -> Iterator[LegacyRecord]:
        for kind, folder in (("model", self.models_dir), ("dataset", self.datasets_dir)):
            for entry in os.scandir(folder):
                path = Path(entry.path) / META
                with contextlib.suppress(OSError):
                    yield LegacyRecord(kind, entry.name, path.read_bytes(), str(path))
        jobs_dir = self.root / "jobs"
        if jobs_dir.is_dir():
            for entry in os.scandir(jobs_dir):
                if entry.name.endswith(".json"):
                    with contextlib.suppress(OSError):
                        raw = Path(entry.path).read_bytes()
                        yield LegacyRecord("job", entry.name[: -len(".json")], raw, entry.path)

    def forget_legacy(self, record: LegacyRecord) -> None:
        """Remove an imported record's file: the row is the truth from now on."""
        with contextlib.suppress(OSError):
            os.unlink(record.location)


def _file_name(file: str) -> str:
    """A data file's name as a row gives it, never a path elsewhere."""
    if not file or "/" in file or file.startswith("."):
        raise ArtifactIntegrityError(f"The data file name {file!r} of a dataset is not valid.")
    return file


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
