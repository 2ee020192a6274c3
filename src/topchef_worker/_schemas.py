"""Local Draft-4 checks.

TopChef validates with ``jsonschema.Draft4Validator`` and no format checker, so the
same validator here predicts the server's verdict: parameters are checked before a
handler runs and results before they are sent.  The server's 400 stays the last
word: a schema the local check cannot apply is left to it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from ._models import ErrorEntry
from .exceptions import ConfigurationError

__all__ = [
    "Check",
    "check_schema",
    "checker",
    "draft4_validator",
    "reason",
    "remote_refs",
    "server_reasons",
]

Check = Callable[[Any], list[str]]

_log = logging.getLogger("topchef_worker")


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
    """Refuse a schema that is not valid Draft 4, and one with a remote ``$ref``,
    which validating would fetch from wherever it points.

    TopChef stores any schema and validates with Draft 4 without checking it first:
    a broken part fails (500) the jobs that reach it, and a later draft's form (a
    numeric ``exclusiveMinimum``) is silently not enforced.  Neither is what the
    schema's author meant, so a described handler's schema is checked here.
    """
    try:
        jsonschema.Draft4Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as error:
        raise ConfigurationError(
            f"{label} is not a valid Draft-4 JSON Schema (TopChef validates with Draft 4, "
            f"where it would fail or not be enforced): {error.message}"
        ) from None
    remote = remote_refs(schema)
    if remote:
        raise ConfigurationError(f"{label} {_REMOTE}: {', '.join(map(repr, remote))}")


def checker(schema: Mapping[str, Any], label: str = "a schema") -> Check | None:
    """Return a function listing what is wrong with an instance, or None.

    None when the stored schema is itself invalid (the server will answer 500s for
    that service; a local check cannot help), or refers to another document (it is
    never fetched: the server's own check decides).  The reasons name the place and
    the rule an instance breaks, and its type, but not its values, which may be
    private: the ``topchef_worker.values`` logger shows them at DEBUG.
    """
    try:
        jsonschema.Draft4Validator.check_schema(dict(schema))
    except jsonschema.SchemaError:
        return None
    remote = remote_refs(schema)
    if remote:
        _log.warning("%s %s (%s): no local check", label, _REMOTE, ", ".join(remote))
        return None
    validator = draft4_validator(schema)

    def check(instance: Any) -> list[str]:
        try:
            errors = list(validator.iter_errors(instance))
        except Exception as error:  # a $ref that cannot be resolved, for one
            return [f"the schema could not be applied ({type(error).__name__}: {error})"]
        reasons = [reason(found) for found in errors]
        if errors and values_log.isEnabledFor(logging.DEBUG):
            for said, found in zip(reasons, errors, strict=True):
                values_log.debug("%s: %s", said, found.message)
        return reasons

    return check


_REMOTE = "refers to other documents with $ref, which are never fetched"

#: Shows parameter and result values where a schema check found them wrong (at
#: DEBUG); silent unless the application turns it on.
values_log = logging.getLogger("topchef_worker.values")

_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))


def _shape(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return next((f"a {name}" for kind, name in _JSON_TYPES if isinstance(value, kind)), "a value")


def reason(error: jsonschema.ValidationError) -> str:
    """What is wrong, without the values: where, its JSON type, the rule it breaks
    (from the schema, which is not private): ``$.sum: a string, against "type":
    "number"``."""
    where = "$" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    )
    if error.validator == "required":  # the names come from the schema, not the data
        return f"{where}: {error.message}"
    rule = json.dumps(error.validator_value, default=str)
    if len(rule) > 200:
        rule = rule[:197] + "..."
    return f"{where}: {_shape(error.instance)}, against {json.dumps(error.validator)}: {rule}"


def server_reasons(errors: Sequence[ErrorEntry], fallback: str) -> list[str]:
    """The reasons of a 400 from the server, without the values its schema messages
    quote (``'eleven' is not of type 'number'``): their titles, counted; the
    ``topchef_worker.values`` logger shows the details at DEBUG."""
    if not errors:
        return [fallback]
    for entry in errors:
        values_log.debug("the server said: %s", entry.detail)
    counted = Counter(entry.title for entry in errors)
    return [
        f"{count} x {title} (details hidden: they may quote the values)"
        for title, count in counted.items()
    ]
