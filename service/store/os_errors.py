"""An ``OSError`` as a client may read it: the cause, never the file.

A store's 503 says why it could not write ("No space left on device"), so that an
operator reading a client's report knows what to fix. ``exc.strerror`` alone is not
enough: it is None for ``OSError(errno.ENOSPC)`` (the errno is then only in
``args``) and for errors whose ``errno`` was set on its own, and the answer read
"Could not write the dataset: None." ``str(exc)`` is no better: it ends with the
file's path, which is the server's business, not the client's.
"""

from __future__ import annotations

import errno
import os


def os_error_reason(exc: OSError) -> str:
    """``"No space left on device (ENOSPC)"``: the message and the errno's name, as far
    as the error knows them, and never its file names."""
    code = exc.errno
    if code is None and len(exc.args) == 1 and type(exc.args[0]) is int:
        code = exc.args[0]
    message = exc.strerror or (os.strerror(code) if code is not None else None)
    name = errno.errorcode.get(code) if code is not None else None
    if message and name:
        return f"{message} ({name})"
    return message or name or f"an I/O error ({type(exc).__name__}, no error code)"


__all__ = ["os_error_reason"]
