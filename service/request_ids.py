"""Request ids (X-Request-ID) and the WSGI environ keys the app and the server hand each other.

Standard library only: the gunicorn worker (which answers some requests before the app) and the
Flask hooks both mint ids here, and neither imports the other.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from typing import Final

#: The header that carries the request id both ways.
HEADER: Final = "X-Request-ID"
#: A well-formed id is reused; anything else (log injection, huge values) is replaced.
WELL_FORMED: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")

#: WSGI environ key where the app leaves the request id for the access line.
REQUEST_ID_ENVIRON_KEY: Final = "service.request_id"
#: WSGI environ key where the app leaves the matched route template for the access line.
ROUTE_ENVIRON_KEY: Final = "service.route"
#: WSGI environ key for the id the service generated when the client chose the request id.
SERVER_REQUEST_ID_ENVIRON_KEY: Final = "service.server_request_id"
#: WSGI environ key for the request's W3C trace context: a (trace_id, span_id) pair.
TRACE_ENVIRON_KEY: Final = "service.trace"
#: WSGI environ key for a gateway decision's original request: a (method, path) pair.
ORIGINAL_REQUEST_ENVIRON_KEY: Final = "service.original_request"

_ids: tuple[int, str, itertools.count[int]] | None = None


def new_request_id() -> str:
    """A fresh request id: 32 hex digits from a random per-process prefix and a counter.

    As unique as a uuid4 in practice without a getrandom() syscall per request; the prefix is
    drawn again in a forked child so workers never share a sequence.
    """
    global _ids
    ids = _ids
    if ids is None or ids[0] != os.getpid():
        ids = _ids = (os.getpid(), secrets.token_hex(8), itertools.count())
    return f"{ids[1]}{next(ids[2]):016x}"
