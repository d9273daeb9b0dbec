"""A route class that decodes JSON bodies with orjson, off the event loop.

A 100,000 x 8 body is ~16 MB of JSON: the standard library takes over a second to
decode it, on the event loop, where it stalls every other request (``/healthz``
included). orjson decodes it several times faster, and in a worker thread. orjson
refuses ``NaN`` and ``Infinity`` literals; for those bodies (and any other it
refuses) the standard decoder runs instead (``service.api.json_fallback``), so that
a NaN is reported by the schema at its exact location rather than as a generic
syntax error.

Points then skip pydantic's walk over every number: each known points list
(top-level ``points``, ``data.points``) becomes a float64 array in C when numpy can
prove it is what the schema would accept (numbers only, rectangular, finite), and
the schema takes that array as is (``service.schemas.common.Points``). On any doubt
the list stays, and pydantic validates it as before, with the same errors at the same
locations. Large bodies first try ``simd_document``: no Python list or float at all
for the points. Garbage collection is paused while millions of lists are built and freed:
none of them can be in a reference cycle, and collecting them repeatedly costs more
than the parse itself.

``route_methods`` lists the methods the app's routes answer, for the CORS middleware.
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import orjson
import simdjson
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from service.api.json_fallback import standard_decode
from service.errors import UnsupportedMediaType
from service.schemas.common import is_points_array

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before lazily included routers: app.routes was flat
    iter_route_contexts = iter  # type: ignore[assignment]

#: Below this size decoding on the loop is cheaper than a thread hop.
_THREAD_THRESHOLD = 64 * 1024
#: Fewer rows than this stay lists: numpy's fixed costs (about 15 us a request) pass
#: pydantic's walk below about 50 rows, and a one-point predict is the common case.
MIN_ARRAY_ROWS = 64


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Garbage collection off for the block, counted: ``gc.disable`` is process-wide,
    so when two parses overlap in two threads, the first to finish must not switch it
    back on under the second. The last one out restores what the first one found."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def points_array(value: Any) -> np.ndarray | None:
    """``value`` as an (n_samples, n_features) float64 array when the schema would
    accept it exactly as that; otherwise None, and the schema judges the list.

    ``np.array`` without a dtype reveals what is inside: strings give a ``U`` dtype,
    null (or a dict) an object dtype, a ragged or nested row a ValueError or the wrong
    number of dimensions. Integers are numbers in JSON, so ``i``/``u`` are fine. The
    one thing it cannot see is a bool among numbers (it reads ``true`` as 1):
    ``decode_json`` rules that out from the raw bytes.
    """
    if not (isinstance(value, list) and len(value) >= MIN_ARRAY_ROWS):
        return None
    if not isinstance(value[0], list):
        return None
    try:
        arr = np.array(value)
    except Exception:  # ragged rows and anything else numpy refuses: the schema decides
        return None
    if arr.dtype.kind not in "iuf":
        return None
    arr = arr.astype(np.float64, copy=False)
    return arr if is_points_array(arr) else None


def _points_slots(document: Any) -> list[tuple[dict[str, Any], str]]:
    """Where request schemas hold points: top-level ``points`` (predict, score) and
    ``data.points`` (models, model selection, comparisons)."""
    if not isinstance(document, dict):
        return []
    slots = [(document, "points")] if "points" in document else []
    data = document.get("data")
    if isinstance(data, dict) and "points" in data:
        slots.append((data, "points"))
    return slots


def _count_bools(document: Any, skip: set[int]) -> int:
    """``true``/``false`` values in the document, not looking inside ``skip`` (ids)."""
    count, stack = 0, [document]
    while stack:
        node = stack.pop()
        if isinstance(node, bool):
            count += 1
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list) and id(node) not in skip:
            stack.extend(node)
    return count


def _bool_literals(body: bytes) -> int:
    return body.count(b"true") + body.count(b"false")


def _arrays_for_points(document: Any, body: bytes) -> None:
    """Replace each points list that ``points_array`` accepts by its array, in place.

    Every bool in the body is a ``true``/``false`` literal in the bytes (JSON cannot
    escape them), so when the bytes hold exactly as many as the document has outside
    the converted lists, none is inside them. Any surplus (a bool among the points, or
    only the word "true" in a name) keeps every list for the schema: slower, never
    wrong.
    """
    converted = []
    for parent, key in _points_slots(document):
        arr = points_array(parent[key])
        if arr is not None:
            converted.append((parent, key, arr))
    if not converted:
        return
    literals = _bool_literals(body)
    if literals and literals != _count_bools(document, {id(p[k]) for p, k, _ in converted}):
        return
    for parent, key, arr in converted:
        parent[key] = arr


_KEY = b'"points"'
_VALUE_ARRAY = re.compile(rb"\s*:\s*\[")
_MATRIX_END = re.compile(rb"\]\s*\]")
#: What JSON numbers and whitespace are made of. Deleted from an array of numbers,
#: they leave only its brackets and commas, whose exact pattern proves its shape.
_NUMBER_BYTES = b"0123456789.eE+- \t\n\r"
_simd = threading.local()


def _value_start(body: bytes) -> int | None:
    """Where the value of the body's one ``"points"`` key starts, if it is an array.

    In valid JSON (checked later) a quote inside a string is escaped, so ``"points"``
    followed by a colon, its quote not after a backslash, can only be a key. Any other
    occurrence of the word (a name, say) is doubt, and doubt takes the usual path.
    """
    if body.count(_KEY) != 1:
        return None
    at = body.find(_KEY)
    match = _VALUE_ARRAY.match(body, at + len(_KEY))
    if body[at - 1 : at] == b"\\" or match is None:
        return None
    return match.end() - 1


def _is_matrix(text: bytes) -> bool:
    """Whether ``text`` is ``[[n, ...], ...]``: rows of the same number of numbers."""
    shape = text.translate(None, _NUMBER_BYTES)
    width = shape.find(b"]") - 1
    if width < 1:
        return False
    rows, extra = divmod(len(shape) - 1, width + 2)
    row = b"[" + b"," * (width - 1) + b"]"
    return not extra and rows >= 1 and shape == b"[" + (row + b",") * (rows - 1) + row + b"]"


def _points_span(body: bytes) -> tuple[int, int, bytes] | None:
    """Byte span (and bytes) of the one ``"points"`` value in ``body`` if it is a
    rectangular array of rows of JSON numbers (nothing else), else None.

    In such an array ``]]`` appears only at its end. It is usually the body's last
    one (a points body, or ``data`` last); otherwise the first after the start.
    """
    start = _value_start(body)
    if start is None:
        return None
    tried = set()
    for find in (
        lambda: body.rfind(b"]]") + 2,
        lambda: body.find(b"]]", start) + 2,
        lambda: match.end() if (match := _MATRIX_END.search(body, start)) else -1,  # "] ]"
    ):
        end = find()
        if end > start + 2 and end not in tried:
            text = body[start:end]
            if _is_matrix(text):
                return start, end, text
        tried.add(end)
    return None


def simd_document(body: bytes) -> Any:
    """The request document with its one points array parsed by simdjson into float64,
    when ``_points_span`` proves it is a plain matrix of numbers; else None.

    The numbers go straight from the bytes into a C buffer (no Python float or list is
    ever made): several times faster than pydantic's ``validate_json`` on 1,000,000 x
    2. The rest of the document is orjson's reading of the body with ``[]`` in place
    of the points, so every other field means exactly what it means on the usual path.
    Anything simdjson refuses (1e400, a huge integer, invalid JSON) returns None: the
    usual path then gives the usual error at its exact location.
    """
    span = _points_span(body)
    if span is None:
        return None
    start, end, text = span
    parser = getattr(_simd, "parser", None)
    if parser is None:
        parser = _simd.parser = simdjson.Parser()
    try:
        document = orjson.loads(body[:start] + b"[]" + body[end:])
        slots = [(parent, key) for parent, key in _points_slots(document) if parent[key] == []]
        if len(slots) != 1:
            return None
        matrix = parser.parse(text)
        try:
            flat = np.frombuffer(matrix.as_buffer(of_type="d"), dtype=np.float64)
            rows = len(matrix)
        finally:
            del matrix  # the parser's memory is reused by its next parse
    except (ValueError, TypeError, RuntimeError, orjson.JSONDecodeError):
        return None
    if rows == 0 or flat.size % rows:
        return None
    points = flat.reshape(rows, flat.size // rows).copy()
    if not is_points_array(points):
        return None
    parent, key = slots[0]
    parent[key] = points
    return document


def decode_json(body: bytes) -> Any:
    """The request document, with points as arrays where that is safe (see above).

    Small bodies make too few objects for a collection to matter; they skip the
    pause's lock."""
    if len(body) >= _THREAD_THRESHOLD:
        document = simd_document(body)
        if document is not None:
            return document
    with gc_paused() if len(body) >= _THREAD_THRESHOLD else nullcontext():
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as refused:
            # NaN literals, numbers past float64's range; real syntax errors raise here.
            # The schema reports these by location, so the lists stay lists.
            return standard_decode(body, refused)
        _arrays_for_points(document, body)
        return document


async def decode_body(body: bytes) -> Any:
    """``decode_json`` of a request body: on the event loop when it is small, in the
    threadpool when it is large. What every JSON route decodes with, and the hot path
    (``service.api.hotpath``) too, so that both read a body the same way."""
    if len(body) < _THREAD_THRESHOLD:
        return decode_json(body)
    return await run_in_threadpool(decode_json, body)


class _FastJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = await decode_body(await self.body())
        return self._json


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class FastJSONRoute(APIRoute):
    """Also answers 415 for a body that says it is not JSON (``curl -d`` sends a form
    type by default), instead of a puzzling "Input should be a valid dictionary"."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_json = self.body_field is not None

        async def fast_handler(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if takes_json and content_type and not _is_json(content_type):
                raise UnsupportedMediaType(
                    f"The body must be JSON, sent as Content-Type: application/json "
                    f"(got {content_type.split(';', 1)[0]!r})."
                )
            return await handler(_FastJSONRequest(request.scope, request.receive))

        return fast_handler


def route_methods(routes: list[BaseRoute]) -> list[str]:
    """Every HTTP method some route answers, sorted: what a CORS preflight may ask for.

    Recent FastAPI keeps an included router as one entry of ``app.routes``, walked by
    ``iter_route_contexts``; mounts (static files) have no methods.
    """
    return sorted(
        {m for route in iter_route_contexts(routes) for m in getattr(route, "methods", ()) or ()}
    )
