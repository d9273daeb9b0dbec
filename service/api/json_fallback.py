"""The standard library's JSON decoder, for bodies orjson refuses.

orjson decodes every body first. What it refuses, the standard decoder reads again:
``NaN``, ``Infinity`` and numbers past float64 are numbers to it, so that the schema
can name such a value at its exact location. The standard decoder fails on some
bodies in ways that are not ``json.JSONDecodeError``: ``RecursionError`` on deep
nesting, ``UnicodeDecodeError`` on bytes that are not UTF-8, ``ValueError`` on an
integer past Python's ``int_max_str_digits``. FastAPI answers those with a generic
``about:blank`` 400, and the v2 protocol quoted Python's advice to the server's
operator; here each becomes a ``json.JSONDecodeError`` that says what is wrong with
the body, and where.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import orjson

#: orjson's nesting limit, the one a body meets first.
MAX_DEPTH = 1024
#: What orjson says of a body nested deeper than ``MAX_DEPTH``.
_TOO_DEEP = "depth limit exceeded"
#: The magic of a ``.npy`` file: a client that sent one with the wrong media type.
_NPY_MAGIC = b"\x93NUMPY"


def standard_decode(body: bytes, refused: orjson.JSONDecodeError) -> Any:
    """``json.loads(body)``, where ``refused`` is orjson's error for the same body.

    Raises ``json.JSONDecodeError`` for every body that is not JSON.
    """
    if refused.msg == _TOO_DEEP:
        # The standard decoder recurses once a level: it would fail the same way, later.
        raise _error(body, f"arrays and objects nest more than {MAX_DEPTH} levels deep", refused)
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise _not_utf8(body, exc) from None
    except RecursionError:
        # Deeper than the interpreter's stack allows, though within orjson's limit: the
        # body is refused for what orjson found first, which is true of it as well.
        raise _error(body, refused.msg, refused) from None
    except ValueError as exc:  # int("1" * 4301): Python's int_max_str_digits
        raise _long_integer(body, exc, refused) from None


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _error(body: bytes, msg: str, refused: orjson.JSONDecodeError) -> json.JSONDecodeError:
    return json.JSONDecodeError(msg, _text(body), refused.pos)


def _not_utf8(body: bytes, exc: UnicodeDecodeError) -> json.JSONDecodeError:
    """Where the first byte that is not UTF-8 is, counted in characters as
    ``json.JSONDecodeError`` counts (the bytes before it decode)."""
    if body.startswith(_NPY_MAGIC):
        msg = (
            "the body is a .npy file, not JSON; send it with Content-Type: "
            "application/x-npy where the endpoint takes one"
        )
    else:
        byte = exc.object[exc.start : exc.start + 1].hex()
        msg = f"the body is not UTF-8 text ({exc.reason}: byte 0x{byte})"
    position = len(body[: exc.start].decode("utf-8", "replace"))
    return json.JSONDecodeError(msg, _text(body), position)


def _long_integer(
    body: bytes, exc: ValueError, refused: orjson.JSONDecodeError
) -> json.JSONDecodeError:
    limit = sys.get_int_max_str_digits()
    text = _text(body)
    # The first run of too many digits that is not inside a string.
    long_number = re.compile(rf'"(?:[^"\\]|\\.)*"|-?[0-9]{{{limit + 1},}}')
    for match in long_number.finditer(text):
        if not match.group().startswith('"'):
            digits = len(match.group().lstrip("-"))
            return json.JSONDecodeError(
                f"an integer of {digits} digits; integers may have at most {limit}",
                text,
                match.start(),
            )
    return json.JSONDecodeError(str(exc).split(";")[0], text, refused.pos)


__all__ = ["MAX_DEPTH", "standard_decode"]
