"""Ids as TopChef understands them.

TopChef parses path ids with Python's :class:`uuid.UUID`, so anything that accepts
(upper case, no dashes, braces, a ``urn:uuid:`` prefix) names the same resource, and it
always answers with the canonical lower-case dashed form.  The client canonicalises ids
before building URLs so that a malformed id fails here, with a clear message, instead
of as a 404 from the server; the test server uses the same function to route.
"""

from __future__ import annotations

import re
import uuid

__all__ = ["id_from_url", "parse_id"]

#: The canonical form, which is how the server answers: taken as it is, since every
#: request and answer carries ids and parsing each with uuid.UUID shows in profiles.
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_id(value: object) -> str | None:
    """Return the canonical form of *value* as TopChef would parse it, or None.

    Only strings can be ids: a path segment is always text, so an ``int`` or a
    :class:`uuid.UUID` passed where a string belongs is a caller's mistake.
    """
    if not isinstance(value, str):
        return None
    if _CANONICAL.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def id_from_url(url: str) -> str | None:
    """Return the canonical id in the last path segment of *url*, or None.

    TopChef reports new ids only in ``Location`` headers (absolute URLs built from the
    request's ``Host``), so the last path segment is the only reliable part.
    """
    path = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return parse_id(path.rsplit("/", 1)[-1])
