"""The one private cattrs converter, strict about JSON types.

cattrs coerces by default: ``"12.5"`` becomes ``12.5``, ``true`` becomes ``1.0``
and the string ``"false"`` becomes ``True``. A client that reports balances must
never do that, so the hooks here accept exactly the JSON types the spec names
and nothing else. Unknown keys are ignored: the service may add fields.

Two converters share the hooks: a fast one without detailed validation for the
common, valid body, and a detailed one that is run only after the fast one has
failed, to name the JSON path of every problem (``$.organizations[1].is_default``).

cattrs is imported, and the converters built, on the first structuring rather than
at ``import stability_user``: together they are most of the package's import time,
and a process that never makes a call should not pay for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import ResponseValidationError
from ._models import Account, Balance, ErrorBody, OrganizationMembership

if TYPE_CHECKING:
    import cattrs

__all__ = ["structure", "structure_error_body"]

T = TypeVar("T")

_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


class _JSONTypeError(TypeError):
    """A JSON value of the wrong type; the message says what was expected and found."""

    def __init__(self, expected: str, value: object) -> None:
        found = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
        super().__init__(f"expected {expected}, got {found}")


def _structure_str(value: Any, _: object) -> str:
    if type(value) is not str:
        raise _JSONTypeError("a string", value)
    return value


def _structure_bool(value: Any, _: object) -> bool:
    # `type() is` rather than isinstance: 0 and 1 are not booleans in JSON.
    if type(value) is not bool:
        raise _JSONTypeError("true or false", value)
    return value


def _structure_float(value: Any, _: object) -> float:
    # bool is a subclass of int, so it has to be excluded by exact type.
    if type(value) is float:
        if not math.isfinite(value):  # json.loads accepts NaN and Infinity
            raise ValueError(f"expected a finite number, got {value!r}")
        return value
    if type(value) is int:
        return float(value)
    raise _JSONTypeError("a number", value)


def _require_object(
    hook: Callable[[Any, Any], T],
) -> Callable[[Any, Any], T]:
    def structure_object(value: Any, cls: Any) -> T:
        if type(value) is not dict:
            raise _JSONTypeError("an object", value)
        return hook(value, cls)

    return structure_object


def _require_array(
    hook: Callable[[Any, Any], T],
) -> Callable[[Any, Any], T]:
    def structure_array(value: Any, cls: Any) -> T:
        # Without this a string would be iterated character by character.
        if type(value) is not list:
            raise _JSONTypeError("an array", value)
        return hook(value, cls)

    return structure_array


def _make_converter(*, detailed: bool) -> cattrs.Converter:
    import cattrs  # noqa: PLC0415 - deferred to the first call, see the module docstring

    converter = cattrs.Converter(detailed_validation=detailed, forbid_extra_keys=False)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(float, _structure_float)
    memberships = tuple[OrganizationMembership, ...]
    # A generic alias cannot go through singledispatch; match it with a predicate.
    converter.register_structure_hook_func(
        lambda cls: cls == memberships,
        _require_array(converter.get_structure_hook(memberships)),
    )
    # Models after the array hook: each model's generated hook binds its fields' hooks now.
    for model in (OrganizationMembership, Account, Balance):
        converter.register_structure_hook(
            model, _require_object(converter.get_structure_hook(model))
        )
    return converter


_converters: dict[bool, cattrs.Converter] = {}  # detailed -> converter, built on first use


def _converter(*, detailed: bool) -> cattrs.Converter:
    converter = _converters.get(detailed)
    if converter is None:
        converter = _converters[detailed] = _make_converter(detailed=detailed)
    return converter


def _format_exception(exc: BaseException, _type: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc)


def _problems(data: Any, cls: type[Any]) -> list[str]:
    import cattrs  # noqa: PLC0415 - already imported by _converter()

    try:
        _converter(detailed=True).structure(data, cls)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none re-raised
        if isinstance(exc, cattrs.BaseValidationError):
            return cattrs.transform_error(exc, path="$", format_exception=_format_exception)
        return [f"{_format_exception(exc, None)} @ $"]
    return ["invalid body @ $"]  # pragma: no cover - the fast path failed, so this does too


def structure(data: Any, cls: type[T], *, status: int) -> T:
    """Structure decoded JSON into ``cls``, strictly.

    Raises:
        ResponseValidationError: naming the JSON path of every problem found.
    """
    try:
        return _converter(detailed=False).structure(data, cls)
    except Exception as exc:
        problems = _problems(data, cls)
        raise ResponseValidationError(
            f"{status} response is not a valid {cls.__name__}: " + "; ".join(problems),
            status=status,
        ) from exc


def _optional(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    return value if type(value) is kind else None


def structure_error_body(data: Any) -> ErrorBody | None:
    """Read an error body tolerantly: ``None`` unless an object; wrong fields become ``None``."""
    if type(data) is not dict:
        return None
    errors = data.get("errors")
    return ErrorBody(
        id=_optional(data, "id", str),
        name=_optional(data, "name", str),
        message=_optional(data, "message", str),
        temporary=_optional(data, "temporary", bool),
        timeout=_optional(data, "timeout", bool),
        fault=_optional(data, "fault", bool),
        errors=tuple(e for e in errors if type(e) is str) if type(errors) is list else None,
    )
