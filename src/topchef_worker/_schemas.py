"""Local Draft-4 checks.

TopChef validates with ``jsonschema.Draft4Validator`` and no format checker, so the
same validator here predicts the server's verdict: parameters are checked before a
handler runs and results before they are sent.  The server's 400 stays the last
word: a schema the local check cannot apply is left to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from .exceptions import ConfigurationError

__all__ = ["Check", "check_schema", "checker", "draft4_validator", "remote_refs"]

Check = Callable[[Any], list[str]]


def _refuse(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


#: Resolves only what a schema holds itself: a ``$ref`` to anything else is
#: unresolvable instead of a request to wherever the schema points (jsonschema's
#: default still fetches URLs, a request the schema's author controls).
_LOCAL_ONLY: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]


def draft4_validator(schema: Mapping[str, Any]) -> jsonschema.Draft4Validator:
    """A Draft-4 validator, as TopChef's, that never fetches a remote ``$ref``."""
    return jsonschema.Draft4Validator(dict(schema), registry=_LOCAL_ONLY)


def remote_refs(schema: object) -> list[str]:
    """Every ``$ref`` in *schema* that points outside it (anything but ``#...``)."""
    found: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                found.append(ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(set(found))


def check_schema(schema: Mapping[str, Any], label: str) -> None:
    """Refuse a schema that is not valid Draft 4, which TopChef would store and then
    fail every job on with a 500."""
    try:
        jsonschema.Draft4Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as error:
        raise ConfigurationError(
            f"{label} is not a valid Draft-4 JSON Schema: {error.message}"
        ) from None


def checker(schema: Mapping[str, Any]) -> Check | None:
    """Return a function listing what is wrong with an instance, or None.

    None when the stored schema is itself invalid (the server will answer 500s for
    that service; a local check cannot help).
    """
    try:
        jsonschema.Draft4Validator.check_schema(dict(schema))
    except jsonschema.SchemaError:
        return None
    validator = jsonschema.Draft4Validator(dict(schema))

    def check(instance: Any) -> list[str]:
        try:
            return [error.message for error in validator.iter_errors(instance)]
        except Exception as error:  # a $ref that cannot be resolved, for one
            return [f"the schema could not be applied ({type(error).__name__}: {error})"]

    return check
