"""What every store shares about trust: canonical JSON, HMAC signatures, and the checks
that run before a stored byte is unpickled or a stored array is used.

The local and the S3 store differ in where bytes live, not in what makes them
trustworthy; keeping these checks in one place keeps the two stores' promises equal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ArtifactIntegrityError, NotFound
from service.store.os_errors import os_error_reason

#: Names of a model's (or dataset's) parts, the same in every store.
ARTIFACT = "model.joblib"
META = "meta.json"
DATA = "data.npy"
NPY_MAGIC = b"\x93NUMPY"
#: Bytes that hold any ``.npy`` header the stores write (numpy pads it to 64 or 128).
HEADER_BYTES = 4096


def canonical_json(obj: Any) -> bytes:
    """The one byte form that is signed: sorted keys, no spaces, never NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class Signer:
    """HMAC-SHA256 over metadata and artifacts with the store's key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def seal(self, meta: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``meta`` with a fresh signature over its canonical form."""
        sealed = dict(meta)
        sealed.pop("signature", None)
        sealed["signature"] = self.sign(canonical_json(sealed))
        return sealed

    def artifact(self, model_id: str, blob: bytes) -> dict[str, Any]:
        """The ``artifact`` entry of a model's metadata: size, hash and a signature that
        binds the hash to the id (an artifact moved to another id is refused)."""
        digest = hashlib.sha256(blob).hexdigest()
        return {
            "file": ARTIFACT,
            "bytes": len(blob),
            "sha256": digest,
            "signature": self.sign(f"{model_id}\n{digest}".encode()),
        }

    def verify_artifact(self, model_id: str, blob: bytes, art: dict[str, Any]) -> None:
        """Raise ``ArtifactIntegrityError`` unless ``blob`` is the artifact ``art`` names:
        called before a single byte is unpickled."""
        digest = hashlib.sha256(blob).hexdigest()
        expected = self.sign(f"{model_id}\n{digest}".encode())
        if digest != art.get("sha256") or not hmac.compare_digest(
            expected, str(art.get("signature", ""))
        ):
            raise ArtifactIntegrityError(
                f"The artifact of model {model_id} failed its integrity check and was not loaded."
            )

    def verify_meta(self, raw: bytes, kind: str, item_id: str) -> dict[str, Any]:
        """Stored metadata bytes, verified against their signature and their id."""
        try:
            meta = json.loads(raw)
            signature = meta.pop("signature")
            if not isinstance(signature, str):
                raise TypeError("signature is not a string")
            given = signature.encode()  # compare_digest refuses non-ASCII str; bytes are fine
            signed = canonical_json(meta)  # only our canonical form was signed: never NaN
        except (ValueError, KeyError, AttributeError, TypeError, RecursionError):
            raise ArtifactIntegrityError(
                f"The metadata of {kind} {item_id} is unreadable or unsigned."
            ) from None
        if not hmac.compare_digest(given, self.sign(signed).encode()):
            raise ArtifactIntegrityError(
                f"The metadata of {kind} {item_id} does not match its signature."
            )
        if meta.get("id") != item_id:
            raise ArtifactIntegrityError(f"The metadata stored for {item_id} is another {kind}'s.")
        return meta


def open_npy(path: Path, shape: list[int], what: str) -> np.ndarray:
    """A read-only memory map of a stored ``.npy`` file of float64 points in C order,
    of the shape its signed metadata names. Never unpickles: the magic is checked
    first and ``allow_pickle=False``. The caller checks the content hash.
    """
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(NPY_MAGIC))
    except FileNotFoundError:
        raise NotFound(f"No {what}.") from None
    except OSError as exc:
        raise ArtifactIntegrityError(
            f"The points of {what} are unreadable: {os_error_reason(exc)}."
        ) from None
    if magic != NPY_MAGIC:
        raise ArtifactIntegrityError(f"The points of {what} are not a .npy file.")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        # An OSError's own text ends with the file's path: the server's, not the client's.
        reason = os_error_reason(exc) if isinstance(exc, OSError) else exc
        raise ArtifactIntegrityError(f"The points of {what} are unreadable: {reason}.") from None
    if (
        not isinstance(X, np.memmap)
        or X.dtype != np.dtype("<f8")
        or list(X.shape) != list(shape)
        or not X.flags.c_contiguous
    ):
        raise ArtifactIntegrityError(f"The points of {what} are not the array stored.")
    return X


class StoredRows:
    """The rows of a stored dataset, read by byte range wherever the store is reachable.

    A stored dataset is one ``.npy`` of float64 in C order, so rows ``start:stop`` are
    one contiguous byte range after the header: a Dask worker reads just its chunk,
    straight from the store (a file, or an S3 ranged GET), without the whole array
    passing through the service. Subclasses say where the bytes are; instances are
    small and picklable, so they travel inside a task. The content hash covers the
    whole array and cannot be checked per chunk; each chunk is checked for its size,
    and the header (dtype, order, shape) for the shape the signed metadata names.
    """

    def __init__(self, n_samples: int, n_features: int, offset: int) -> None:
        self.n_samples = n_samples
        self.n_features = n_features
        self.offset = offset

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_samples, self.n_features

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a read-only float64 array (stop - start, n_features)."""
        if not 0 <= start <= stop <= self.n_samples:
            raise ValueError(f"rows {start}:{stop} are outside 0:{self.n_samples}")
        width = 8 * self.n_features
        size = (stop - start) * width
        data = self._read(self.offset + start * width, size) if size else b""
        if len(data) != size:
            raise ArtifactIntegrityError(
                f"Rows {start}:{stop} of a stored dataset are truncated "
                f"({len(data)} of {size} bytes)."
            )
        return np.frombuffer(data, dtype="<f8").reshape(stop - start, self.n_features)

    def _read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError


def npy_data_offset(head: bytes, shape: list[int], what: str) -> int:
    """Where the data of a ``.npy`` starts, given its first bytes (at least the header),
    after checking that it holds float64 in C order of ``shape``."""
    import io

    fh = io.BytesIO(head)
    try:
        if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise ValueError("not a .npy file")
        fh.seek(0)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            got_shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            got_shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, EOFError) as exc:
        raise ArtifactIntegrityError(f"The points of {what} are unreadable: {exc}.") from None
    if fortran or dtype != np.dtype("<f8") or list(got_shape) != list(shape):
        raise ArtifactIntegrityError(f"The points of {what} are not the array stored.")
    return fh.tell()
