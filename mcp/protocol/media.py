"""Media types in request headers: what a client accepts, and whether a body is sent as JSON."""

from __future__ import annotations

import functools

_JSON = "application/json"


def _media_types(header: str) -> list[str]:
    """The media ranges of an Accept header a client will take (q=0 means it will not)."""
    kept = []
    for part in header.split(","):
        fields = [f.strip().lower() for f in part.split(";")]
        if any(f.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for f in fields[1:]):
            continue
        if fields[0]:
            kept.append(fields[0])
    return kept


@functools.lru_cache(maxsize=64)  # a pure function of a header that takes few distinct values
def accepts_json(accept: str | None) -> bool:
    """Whether a client with this Accept header takes our JSON answers (no header: anything)."""
    if accept is None:
        return True
    return any(t in (_JSON, "application/*", "*/*") for t in _media_types(accept))


@functools.lru_cache(maxsize=64)
def is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == _JSON
