"""The one private cattrs converter, strict about JSON types.

cattrs coerces by default: ``"12.5"`` becomes ``12.5``, ``true`` becomes ``1.0``
and the string ``"false"`` becomes ``True``. A client that reports balances must
never do that, so the hooks here accept exactly the JSON types the spec names
and nothing else. Unknown keys are ignored: the service may add fields.

Two converters share the hooks: a fast one without detailed validation for the
common, valid body, and a detailed one that is run only after the fast one has
failed, to name the JSON path of every problem (``$.organizations[1].is_default``).
The models come from the endpoint table, and every attrs class reachable from
them gets the "must be a JSON object" check: a new endpoint cannot forget it.
"""

from __future__ import annotations

import functools
import math
import operator
import typing
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._endpoints import ENDPOINTS
from ._errors import ResponseValidationError
from ._models import ErrorBody

if TYPE_CHECKING:
    import cattrs

__all__ = ["prepare", "structure", "structure_error_body"]

T = TypeVar("T")

_MAX_PROBLEMS = 10  # a body with a million wrong fields still gives a readable message

# Fields the library sets, never the service: a body naming them is not read into them.
_NOT_FROM_JSON = frozenset({"freshness"})

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


def _require(kind: type, expected: str, hook: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    def structure_checked(value: Any, cls: Any) -> T:
        # Without this a string would be iterated character by character, and a
        # list would reach the model's hook as if it were its fields.
        if type(value) is not kind:
            raise _JSONTypeError(expected, value)
        return hook(value, cls)

    return structure_checked


def _array_hook(converter: cattrs.Converter, item_type: Any) -> Callable[[Any, Any], Any]:
    """``tuple[item_type, ...]`` from a JSON array, each item by its type's hook (the fast path)."""
    item_hook = converter.get_structure_hook(item_type)

    def structure_array(value: Any, _: object) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _JSONTypeError("an array", value)
        return tuple([item_hook(item, item_type) for item in value])

    return structure_array


def _models(roots: tuple[type, ...]) -> Iterator[type]:
    """Every attrs class reachable from ``roots`` through field types, innermost first."""
    seen: set[type] = set()

    def visit(cls: type) -> Iterator[type]:
        if cls in seen:
            return
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            if field.name in _NOT_FROM_JSON:
                continue
            for arg in (hints[field.name], *typing.get_args(hints[field.name])):
                if attrs.has(arg):
                    yield from visit(arg)
        yield cls

    for root in roots:
        yield from visit(root)


def _array_types(models: list[type]) -> set[Any]:
    hints = (
        typing.get_type_hints(model)[f.name]
        for model in models
        for f in attrs.fields(model)
        if f.name not in _NOT_FROM_JSON
    )
    return {hint for hint in hints if typing.get_origin(hint) is tuple}


def _make_converter(*, detailed: bool) -> cattrs.Converter:
    # cattrs is imported with the first body to structure, not with the package.
    import cattrs  # noqa: PLC0415
    from cattrs.gen import make_dict_structure_fn, override  # noqa: PLC0415

    converter = cattrs.Converter(detailed_validation=detailed, forbid_extra_keys=False)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(float, _structure_float)
    models = list(_models(tuple(endpoint.model for endpoint in ENDPOINTS)))
    # Arrays first, then the models innermost first: each generated hook binds the
    # hooks of its fields when it is made.
    for array in _array_types(models):
        args = typing.get_args(array)
        if detailed or len(args) != 2 or args[1] is not Ellipsis:
            # cattrs's own: it names the index of every problem; and any fixed shape.
            hook = _require(list, "an array", converter.get_structure_hook(array))
        else:
            hook = _array_hook(converter, args[0])
        # A generic alias cannot go through singledispatch; match it with a predicate.
        converter.register_structure_hook_func(functools.partial(operator.eq, array), hook)
    for model in models:
        omitted: dict[str, Any] = {
            f.name: override(omit=True) for f in attrs.fields(model) if f.name in _NOT_FROM_JSON
        }
        generated: Callable[[Any, Any], Any] = (
            make_dict_structure_fn(model, converter, **omitted)
            if omitted
            else converter.get_structure_hook(model)
        )
        hook = _require(dict, "an object", generated)
        converter.register_structure_hook(model, hook)
    return converter


@functools.cache
def _converter(*, detailed: bool) -> cattrs.Converter:
    return _make_converter(detailed=detailed)


def prepare() -> None:
    """Import cattrs and build the fast converter now, rather than at the first answer.

    A session calls this when it is made: ``import stability_user`` stays cheap, and
    the first answer never needs to open a file (a process out of descriptors can
    still read it).
    """
    for model in _MODEL_CLASSES:
        if model not in _hooks:
            _hooks[model] = _converter(detailed=False).get_structure_hook(model)


def _format_exception(exc: BaseException, _type: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc)


def _problems(data: Any, cls: type[Any]) -> list[str]:
    import cattrs  # noqa: PLC0415 - imported by _make_converter already

    try:
        _converter(detailed=True).structure(data, cls)
    except cattrs.BaseValidationError as exc:
        return cattrs.transform_error(exc, path="$", format_exception=_format_exception)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none re-raised
        return [f"{_format_exception(exc, None)} @ $"]
    return ["invalid body @ $"]  # pragma: no cover - the fast path failed, so this does too


_hooks: dict[type, Callable[[Any, Any], Any]] = {}  # each model's generated hook, looked up once
_MODEL_CLASSES = tuple(endpoint.model for endpoint in ENDPOINTS)


def structure(data: Any, cls: type[T], *, status: int, clean: Callable[[str], str] = str) -> T:
    """Structure decoded JSON into ``cls``, strictly.

    Raises:
        ResponseValidationError: naming the JSON path of the first problems found;
            ``clean`` is applied to the message (the caller redacts the key there).
    """
    hook = _hooks.get(cls)
    if hook is None:
        hook = _hooks[cls] = _converter(detailed=False).get_structure_hook(cls)
    try:
        result: T = hook(data, cls)
    except Exception as exc:
        problems = _problems(data, cls)
        shown = "; ".join(problems[:_MAX_PROBLEMS])
        if len(problems) > _MAX_PROBLEMS:
            shown += f"; and {len(problems) - _MAX_PROBLEMS} more"
        raise ResponseValidationError(
            clean(f"{status} response is not a valid {cls.__name__}: {shown}"), status=status
        ) from exc
    return result


def _optional(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    return value if type(value) is kind else None


def structure_error_body(data: Any, clean: Callable[[str], str] = str) -> ErrorBody | None:
    """Read an error body tolerantly: ``None`` unless an object; wrong fields become ``None``.

    ``clean`` is applied to every string taken from the body (the caller redacts
    the key there, after JSON decoding has undone any escapes).
    """
    if type(data) is not dict:
        return None

    def text(key: str) -> str | None:
        value = _optional(data, key, str)
        return None if value is None else clean(value)

    errors = data.get("errors")
    return ErrorBody(
        id=text("id"),
        name=text("name"),
        message=text("message"),
        temporary=_optional(data, "temporary", bool),
        timeout=_optional(data, "timeout", bool),
        fault=_optional(data, "fault", bool),
        errors=tuple(clean(e) for e in errors if type(e) is str) if type(errors) is list else None,
    )
