"""The JSON form of a frozen dataclass, field by field from its type hints.

``to_json`` writes a dataclass's fields in their order: an enum by its value, a nested
dataclass as an object, a tuple or list as an array, a dict as an object; ``str``, ``int``,
``float``, ``bool`` and ``None`` as they are.

``from_json`` reads one back. What each field accepts follows from its type:

==========================  =============================================================
``str``                     a JSON string
``int``                     a JSON number (not ``true``/``false``), through ``int()``
``float``                   a JSON number (not ``true``/``false``), through ``float()``
``bool``                    ``true`` or ``false``
an ``enum.Enum``            one of its values
``Literal[a, b]``           one of ``a``, ``b``
``X | None``                ``null``, or what ``X`` accepts
``tuple[X, ...]``           an array of what ``X`` accepts (``list[X]`` likewise)
``dict[str, X]``            an object of what ``X`` accepts
a dataclass                 an object, read by the same rules
==========================  =============================================================

A field absent from the object reads as its default; absent without a default, it is a
``KeyError`` naming it. Names the object has and the dataclass does not are ignored.
A field whose ``metadata`` holds ``read_with(fn)`` is read by ``fn(value, path)`` instead
(for a rule the type cannot say, e.g. counts that are never negative). A field that is not
JSON (``bytes``: an event's payload) must be handed to ``from_json`` by name.

Any other value is a ``JsonFormError`` naming the field's path, the value and what was
expected (``renditions[1].kind 'x': expected one of 'video', 'audio'``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from camflow.errors import JsonFormError

_T = TypeVar("_T")
_Read = Callable[[Any, str], Any]  # (JSON value, path for messages) -> field value

_METADATA_KEY = "camflow.jsonform.read"


def read_with(read: _Read) -> dict[str, _Read]:
    """Field metadata: read this field with ``read(value, path)`` rather than by its type."""
    return {_METADATA_KEY: read}


# --- writing ---------------------------------------------------------------------------


def to_json(obj: Any, skip: str | None = None) -> dict[str, Any]:
    """The JSON form of the dataclass ``obj``, its fields in order (less the one named ``skip``)."""
    return {name: _json_value(getattr(obj, name)) for name in _names(type(obj)) if name != skip}


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    return value


# --- reading ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    read: _Read | None  # None: not JSON, must be given
    default: Callable[[], Any] | None  # the field's default (made afresh per read), if it has one


def from_json(cls: type[_T], data: Mapping[str, Any], /, **given: Any) -> _T:
    """A ``cls`` from its JSON form ``data``; ``given`` holds the fields that are not JSON."""
    return _read_dataclass(cls, data, "", given)


def _read_dataclass(cls: type[_T], data: Any, path: str, given: Mapping[str, Any]) -> _T:
    if not isinstance(data, Mapping):
        raise JsonFormError(f"{path or cls.__name__} {data!r}: expected an object")
    values: dict[str, Any] = {}
    for f in _plan(cls):
        if f.name in given:
            values[f.name] = given[f.name]
        elif f.read is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no JSON form: it must be given")
        elif f.name in data:
            values[f.name] = f.read(data[f.name], f"{path}.{f.name}" if path else f.name)
        elif f.default is not None:
            values[f.name] = f.default()
        else:
            raise KeyError(f.name)
    return cls(**values)


_PLANS: dict[type, tuple[_Field, ...]] = {}


def _plan(cls: type) -> tuple[_Field, ...]:
    """How to read each field of ``cls``, worked out once per class."""
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _new_plan(cls)
    return plan


def _new_plan(cls: type) -> tuple[_Field, ...]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        custom = f.metadata.get(_METADATA_KEY)
        read = custom if custom is not None else _reader(hints[f.name])
        default: Callable[[], Any] | None = None
        if f.default is not dataclasses.MISSING:
            default = functools.partial(_same, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        plan.append(_Field(f.name, read, default))
    return tuple(plan)


def _same(value: Any) -> Any:
    return value


def _reader(hint: Any) -> _Read | None:
    """How a value of type ``hint`` is read (None for ``bytes``, which has no JSON form)."""
    if hint is bytes:
        return None
    simple = _SIMPLE.get(hint)
    if simple is not None:
        return simple
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _required_reader(next(a for a in args if a is not type(None)))
        return functools.partial(_optional, inner)
    if origin is Literal:
        return functools.partial(_one_of, args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return functools.partial(_array, _required_reader(args[0]), tuple)
    if origin is list:
        return functools.partial(_array, _required_reader(args[0]), list)
    if origin is dict and args[0] is str:
        return functools.partial(_object, _required_reader(args[1]))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return functools.partial(_member, hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return functools.partial(_nested, hint)
    raise TypeError(f"no JSON form for the type {hint!r}")


def _required_reader(hint: Any) -> _Read:
    read = _reader(hint)
    if read is None:
        raise TypeError(f"no JSON form for the type {hint!r} inside another")
    return read


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise JsonFormError(f"{path} {value!r}: expected a string")
    return value


def _number(kind: type[int] | type[float], value: Any, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JsonFormError(f"{path} {value!r}: expected a number")
    try:
        return kind(value)
    except (OverflowError, ValueError) as exc:  # int(Infinity), float(10**400), int(NaN)
        raise JsonFormError(f"{path} {value!r}: out of range ({exc!r})") from exc


def _flag(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise JsonFormError(f"{path} {value!r}: expected true or false")
    return value


_SIMPLE: dict[Any, _Read] = {
    str: _string,
    int: functools.partial(_number, int),
    float: functools.partial(_number, float),
    bool: _flag,
}


def _optional(inner: _Read, value: Any, path: str) -> Any:
    return None if value is None else inner(value, path)


def _one_of(options: tuple[Any, ...], value: Any, path: str) -> Any:
    for option in options:
        if type(value) is type(option) and value == option:
            return option
    raise JsonFormError(f"{path} {value!r}: expected one of {', '.join(map(repr, options))}")


def _member(kind: type[enum.Enum], value: Any, path: str) -> enum.Enum:
    for member in kind:
        if type(value) is type(member.value) and value == member.value:
            return member
    expected = ", ".join(repr(m.value) for m in kind)
    raise JsonFormError(f"{path} {value!r}: expected one of {expected}")


def _array(item: _Read, kind: type[tuple[Any, ...]] | type[list[Any]], value: Any, path: str) -> Any:
    if not isinstance(value, list):
        raise JsonFormError(f"{path} {value!r}: expected an array")
    return kind(item(v, f"{path}[{i}]") for i, v in enumerate(value))


def _object(item: _Read, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise JsonFormError(f"{path} {value!r}: expected an object")
    return {k: item(v, f"{path}[{k!r}]") for k, v in value.items()}


def _nested(cls: type[Any], value: Any, path: str) -> Any:
    return _read_dataclass(cls, value, path, {})
