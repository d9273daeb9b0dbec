"""Uploaded data (``.npy`` and CSV bodies) -> a finite, C-ordered float64 array.

Nothing here ever unpickles: the ``.npy`` header is read with numpy's own header
parsers and the data with ``frombuffer`` for the dtype the header declares, which
must be a plain integer or floating type. An object array (a pickle in disguise) is
refused from its header, before a byte of its payload is read.

Sizes are checked from the header (``.npy``) or while rows are read (CSV) against
the same ``Limits`` as JSON points, so a dataset that is accepted can also be fitted.

Errors name the place in the body: ``["body", row, column]`` for a value,
``["body"]`` for the file as a whole.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import tokenize
from typing import Any, BinaryIO

import numpy as np

from service.domain.datasets.arrays import check_size
from service.domain.limits import Limits
from service.domain.training.warnings_capture import capture_warnings
from service.errors import InvalidInput, Loc

NPY_MEDIA_TYPE = "application/x-npy"
CSV_MEDIA_TYPE = "text/csv"

#: ``.npy`` headers are a few hundred bytes; numpy's own default bound.
MAX_NPY_HEADER = 10_000
#: Magic, version and header length come before the header: at most 12 bytes.
_NPY_PREAMBLE = 12
#: A body already in memory, whose data an array can share instead of copying.
Buffer = bytes | bytearray | memoryview

#: The first bytes of every ``.npy`` file.
NPY_MAGIC = b"\x93NUMPY"

#: Bytes read to tell what a body that is not a ``.npy`` is, and how many characters
#: of it an answer quotes.
_PEEK = 64
_QUOTE = 40

#: Element kinds converted to float64: signed and unsigned integers, floats.
_NUMERIC_KINDS = frozenset("iuf")


def _invalid(msg: str, loc: Loc = ("body",), kind: str = "value_error") -> InvalidInput:
    return InvalidInput.at(list(loc), msg, kind)  # type: ignore[return-value]


def require_finite(X: np.ndarray, loc: Loc = ("body",)) -> None:
    """422 naming the first NaN or infinity as ``[*loc, row, column]``."""
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise _invalid(
            f"row {row}, column {col} is {X[row, col]!r}: every value must be a finite number.",
            [*loc, row, col],
            "finite_number",
        )


def to_float64(X: np.ndarray) -> np.ndarray:
    """C-ordered little-endian float64, the form the service fits and hashes."""
    return np.ascontiguousarray(X, dtype=np.dtype("<f8"))


def _not_npy(head: bytes) -> str:
    """Why a body without the ``.npy`` magic is refused, in terms of what it is.

    Text (a CSV saved under a ``.npy`` name) is the usual case, and numpy's own
    ``load`` calls it "pickled (object) data", which sends people looking for a
    pickle; the answer says it is text, and quotes its start."""
    # Predict and score take no CSV; an upload does: the advice holds for every route.
    fix = (
        "save the array with numpy.save (CSV text is uploaded to POST /v1/datasets as "
        "Content-Type: text/csv)"
    )
    if head.startswith(b"PK\x03\x04"):
        return (
            "the body is a .npz (zip) archive, not a .npy file; send one array, saved "
            "with numpy.save."
        )
    if not head:
        return f"the body is empty, not a .npy file; {fix}."
    try:
        # Incremental: a character cut at the end of the peek is still text; a BOM
        # (a CSV from a spreadsheet) is dropped.
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        quoted = text[:_QUOTE] + ("..." if len(text) > _QUOTE else "")
        return (
            f"the body is text ({quoted!r}), not a .npy file: a .npy file is binary and "
            f"starts with the \\x93NUMPY magic whatever the file is named; {fix}."
        )
    return f"the body is not a .npy file (it does not start with the \\x93NUMPY magic); {fix}."


def _read_npy_header(fp: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """``(shape, fortran_order, dtype)`` as the header says them, nothing checked yet.

    numpy evaluates the header with ``ast.literal_eval`` (and retries a Python 2 header
    through ``tokenize``): a hostile header text reaches the parser's every failure,
    not only the ``ValueError`` numpy documents. They all mean the same: no header.
    """
    head = fp.read(_PEEK)
    if head[:6] != NPY_MAGIC:
        raise _invalid(_not_npy(head), kind="npy_format")
    fp.seek(fp.tell() - len(head))
    try:
        # numpy warns when it had to parse a Python 2 header; that is not the log's.
        with capture_warnings():
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                return np.lib.format.read_array_header_1_0(fp, MAX_NPY_HEADER)
            if version == (2, 0):
                return np.lib.format.read_array_header_2_0(fp, MAX_NPY_HEADER)
        raise ValueError(
            f"format version {version[0]}.{version[1]} is only needed for structured "
            "dtypes; save a plain numeric array"
        )
    except (
        ValueError,
        EOFError,
        OSError,
        SyntaxError,
        TypeError,  # an unhashable dict key: {[1]: 2}
        RecursionError,  # deep nesting: "-" * 4000 + "1"
        MemoryError,  # the parser's own stack, on a header of at most MAX_NPY_HEADER bytes
        tokenize.TokenError,  # the Python 2 retry of an unclosed bracket
    ) as exc:
        # numpy quotes the whole header (up to MAX_NPY_HEADER bytes) in its messages.
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        if len(reason) > 200:
            reason = reason[:200] + "..."
        raise _invalid(f"the .npy header is unreadable: {reason}", kind="npy_format") from None


def read_npy(source: BinaryIO | Buffer, limits: Limits) -> np.ndarray:
    """A ``.npy`` file (n_samples, n_features) of integers or floats -> float64.

    ``source`` is a file (a spooled upload) or the body's bytes in memory; from
    memory, the array shares the bytes (no copy at all for the little-endian float64
    in C order that ``numpy.save`` writes), which halves a large predict's memory.
    The header's shape is checked against ``limits`` before the data is read, and the
    data's length against the header, so a truncated file is named as one.
    """
    in_memory = isinstance(source, Buffer)
    fp: BinaryIO = (
        io.BytesIO(memoryview(source)[: _NPY_PREAMBLE + MAX_NPY_HEADER])  # type: ignore[arg-type]
        if in_memory
        else source  # type: ignore[assignment]
    )
    shape, fortran, dtype = _read_npy_header(fp)
    if dtype.hasobject:
        # numpy would unpickle this payload; it is refused unread (allow_pickle=False).
        raise _invalid(
            f"the .npy file holds Python objects (dtype {dtype}); they are never unpickled. "
            "Send a plain numeric array (float64, float32 or integers).",
            kind="npy_dtype",
        )
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _NUMERIC_KINDS:
        raise _invalid(
            f"dtype {dtype} is not numeric; send floats or integers (they become float64).",
            kind="npy_dtype",
        )
    if len(shape) != 2:
        hint = " (reshape(-1, 1) for one feature)" if len(shape) == 1 else ""
        raise _invalid(
            f"the array has shape {tuple(shape)}; expected 2 dimensions, "
            f"(n_samples, n_features){hint}.",
            kind="npy_shape",
        )
    n_samples, n_features = (int(n) for n in shape)
    if n_samples < 0 or n_features < 0:
        # numpy's header parser takes any int; a negative one would pass the length
        # check below (two negatives multiply to a positive) and fail in reshape.
        raise _invalid(
            f"the .npy header gives the shape {tuple(shape)}, with a negative dimension; "
            "dimensions are the number of rows and columns, 0 or more.",
            kind="npy_shape",
        )
    if n_samples == 0 or n_features == 0:
        raise _invalid(
            f"the array has shape {tuple(shape)}; it needs at least one row and one column.",
            kind="npy_shape",
        )
    check_size(n_samples, n_features, limits, ["body"])
    expected = n_samples * n_features * dtype.itemsize
    if in_memory:
        start = fp.tell()
        data: Buffer = memoryview(source)[start : start + expected + 1]  # type: ignore[arg-type]
    else:
        data = fp.read(expected + 1)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise _invalid(
            f"the .npy file is {what}: shape {tuple(shape)} of {dtype} needs {expected} "
            f"bytes of data, the body has {len(data) if len(data) < expected else 'more'}.",
            kind="npy_truncated" if len(data) < expected else "npy_format",
        )
    flat = np.frombuffer(data, dtype=dtype, count=n_samples * n_features)
    X = flat.reshape((n_samples, n_features), order="F" if fortran else "C")
    with np.errstate(over="ignore"):  # a float128 beyond float64 becomes inf: refused next
        X = to_float64(X)
    require_finite(X)
    return X


def _number(cell: str) -> float | None:
    """The cell's value, or None when it is not a number: one rule for the header
    check and for the rows, so that what is a number in one is a number in the other."""
    try:
        return float(cell.strip())
    except ValueError:
        return None


def _parse_row(cells: list[str], row: int, header: bool) -> list[float]:
    values = []
    for col, cell in enumerate(cells):
        value = _number(cell)
        if value is None:
            hint = ""
            if row == 0 and not header:
                hint = (
                    " A first line is a header only when none of its cells is a number; "
                    "send Content-Type: text/csv; header=present to skip it anyway."
                )
            raise _invalid(
                f"row {row}, column {col}: {cell.strip()[:40]!r} is not a number; a CSV "
                f"body holds numbers only (and an optional header row).{hint}",
                ["body", row, col],
                "float_parsing",
            )
        if not math.isfinite(value):
            raise _invalid(
                f"row {row}, column {col} is {cell.strip()!r}: every value must be a finite "
                "number.",
                ["body", row, col],
                "finite_number",
            )
        values.append(value)
    return values


def _looks_like_header(cells: list[str]) -> bool:
    """A header names its columns: a line with any number in it is data. (Taking a line
    with one cell that is not a number for a header dropped rows such as ``"1,5",2``,
    whose decimal comma is no number, without a word.)"""
    return all(_number(cell) is None for cell in cells)


def _first_line(text: io.TextIOBase) -> tuple[int, list[str] | None]:
    """The index and cells of the first non-blank line (None when there is none)."""
    for i, cells in enumerate(csv.reader(text, strict=True)):
        if cells and any(c.strip() for c in cells):
            return i, cells
    return 0, None


def _read_csv_slowly(text: io.TextIOBase, skip: int, limits: Limits) -> np.ndarray:
    """Row by row in Python: slow, but it names the first bad row and cell exactly."""
    rows: list[list[float]] = []
    width: int | None = None
    for i, cells in enumerate(csv.reader(text, strict=True)):
        if i < skip or not cells or all(not c.strip() for c in cells):
            continue
        row = len(rows)
        width = len(cells) if width is None else width
        if len(cells) != width:
            raise _invalid(
                f"row {row} has {len(cells)} values, expected {width} (the width of the "
                "first row).",
                ["body", row],
                "ragged_rows",
            )
        check_size(row + 1, width, limits, ["body"])
        rows.append(_parse_row(cells, row, header=skip > 0))
    if not rows or width is None:
        raise _invalid("the CSV body holds no rows of numbers.", kind="csv_empty")
    return np.array(rows, dtype=np.float64)


def read_csv(fp: BinaryIO, limits: Limits, *, header: bool | None = None) -> np.ndarray:
    """Comma-separated numbers, one row per line -> float64 (n_samples, n_features).

    ``header`` True skips the first line, False parses it, None (the default) skips it
    exactly when none of its cells is a number. Blank lines are ignored. Rows are
    counted from 0 after the header, as ``errors[].loc`` names them.

    numpy's C parser reads the body; only when it refuses it does a Python pass run
    to name the first bad row and cell.
    """
    text = io.TextIOWrapper(fp, encoding="utf-8-sig", newline="")
    try:
        first, cells = _first_line(text)
        if cells is None:
            raise _invalid("the CSV body holds no rows of numbers.", kind="csv_empty")
        if header is None:
            header = _looks_like_header(cells)
        skip = first + 1 if header else 0
        text.seek(0)
        try:
            # Not warnings.catch_warnings(): it swaps process-wide filters under
            # concurrent fits. A body with no data gives an empty X, refused below.
            with capture_warnings():
                X = np.loadtxt(
                    text,
                    dtype=np.float64,
                    delimiter=",",
                    comments=None,
                    quotechar='"',
                    skiprows=skip,
                    ndmin=2,
                    max_rows=limits.max_points + 1,
                )
        except ValueError:
            text.seek(0)
            X = _read_csv_slowly(text, skip, limits)
    except UnicodeDecodeError as exc:
        raise _invalid(f"the CSV body is not UTF-8 text: {exc}", kind="csv_encoding") from None
    except csv.Error as exc:
        raise _invalid(f"the CSV body is malformed: {exc}", kind="csv_format") from None
    finally:
        text.detach()  # leave the caller's file open
    if X.size == 0:
        raise _invalid("the CSV body holds no rows of numbers.", kind="csv_empty")
    check_size(X.shape[0], X.shape[1], limits, ["body"])
    require_finite(X)
    return to_float64(X)


def csv_header_param(content_type: str) -> bool | None:
    """RFC 7111's ``header=present|absent`` parameter of ``text/csv``, when given."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "header":
            value = value.strip().strip('"').lower()
            if value in ("present", "absent"):
                return value == "present"
    return None


def write_npy(X: np.ndarray) -> bytes:
    """``numpy.save`` of ``X`` into bytes (for ``Accept: application/x-npy``)."""
    buf = io.BytesIO()
    with capture_warnings():  # numpy's note about header versions is not the client's
        np.lib.format.write_array(buf, np.ascontiguousarray(X), allow_pickle=False)
    return buf.getvalue()


__all__ = [
    "CSV_MEDIA_TYPE",
    "NPY_MEDIA_TYPE",
    "csv_header_param",
    "read_csv",
    "read_npy",
    "require_finite",
    "to_float64",
    "write_npy",
]
