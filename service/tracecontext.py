"""W3C Trace Context: the ``traceparent`` header, read so log lines can join a distributed trace.

https://www.w3.org/TR/trace-context/#traceparent-header. The service starts no spans of its own:
it logs the caller's trace id and span id (the header's parent-id) on the request's lines.
"""

from __future__ import annotations

import re

#: version "-" trace-id "-" parent-id "-" trace-flags, lowercase hex only (§3.2.2). A future
#: version may append fields after another "-" (§3.2.4); version 00 may not.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """The (trace_id, span_id) of a valid ``traceparent`` value, else None (ignore the header)."""
    if not value or len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, rest = match.groups()
    # ff is forbidden; version 00 has exactly four fields; all-zero ids are invalid (§3.2.2.3-4).
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id
