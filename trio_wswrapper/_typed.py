"""Typed handler arguments: JSON values converted to the handler's parameter annotations.

:func:`make_binder` inspects a handler once, at registration, and builds one converter per
annotated parameter. Per message, the binder checks the argument count and runs those
converters; a handler without parameter annotations gets no binder at all, so its arguments
pass through untouched (PROTOCOL.md §7.3).

Converters are plain closures that return the converted value or raise :class:`_Invalid` with
a short text (``expected int, got str``). Containers prefix the text with where the bad value
sits (``field 'x': …``, ``item 2: …``, ``key 'k': …``), so the final message names the path.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from ._errors import WSWrapperError

__all__ = ["ArgumentError", "Binder", "make_binder"]

Convert = Callable[[Any], Any]
#: Checks and converts one message's positional arguments; raises :class:`ArgumentError`.
Binder = Callable[[tuple[Any, ...]], "tuple[Any, ...] | list[Any]"]

_NoneType = type(None)


class ArgumentError(WSWrapperError, TypeError):
    """An event's or request's arguments do not fit the handler's annotated parameters.

    The text names the parameter and the place inside it, for example
    ``Invalid argument 'point': field 'x': expected int, got str`` or
    ``Handler 'add' takes 2 arguments, got 3``. A request is rejected with it as the error
    object's ``message``; an event is dropped and logged.
    """


class _Invalid(Exception):
    """Raised by a converter; ``args[0]`` is the text, without the parameter name."""


def _kind(value: object) -> str:
    """The JSON type of a decoded value, in Python's words, for error texts."""
    if value is None:
        return "None"
    return type(value).__name__


def _show(value: object) -> str:
    """A short rendering of a scalar value for ``Literal`` and enum errors."""
    if isinstance(value, (str, int, float)) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return _kind(value)


# ---------------------------------------------------------------------------------------------
# Scalars


def _to_int(value: Any) -> int:
    # JSON has one number type; JavaScript sends 3 for 3.0, Python peers may send 3.0.
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise _Invalid(f"expected int, got {_kind(value)}")


def _to_float(value: Any) -> float:
    # As in Python's typing, an int is acceptable where a float is expected; it is passed
    # unchanged, so that a value echoed back keeps its exact JSON spelling.
    if type(value) is float or type(value) is int:
        return value
    raise _Invalid(f"expected float, got {_kind(value)}")


def _exact(tp: type, name: str) -> Convert:
    def check(value: Any) -> Any:
        if type(value) is tp:
            return value
        raise _Invalid(f"expected {name}, got {_kind(value)}")

    return check


_SCALARS: dict[Any, Convert] = {
    int: _to_int,
    float: _to_float,
    str: _exact(str, "str"),
    bool: _exact(bool, "bool"),
    _NoneType: _exact(_NoneType, "None"),
}
_SCALARS[None] = _SCALARS[_NoneType]

#: The JSON type each scalar converter passes through unchanged: values of exactly that type
#: are accepted with one ``type(v) is t`` test, inline, without calling the converter.
_PASS: dict[Convert, type] = {convert: tp for tp, convert in _SCALARS.items() if tp is not None}


def _pass_type(convert: Convert | None) -> type | None:
    return _PASS.get(convert) if convert is not None else None


def _required_marker(origin: Any) -> bool | None:
    """True for ``Required``, False for ``NotRequired`` (typing or typing_extensions), else None."""
    if getattr(origin, "__module__", None) in ("typing", "typing_extensions"):
        return {"Required": True, "NotRequired": False}.get(getattr(origin, "_name", ""))
    return None


_LIST_ORIGINS = (
    list,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)
_DICT_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _describe(tp: Any) -> str:
    """Python-like text for an annotation (``list[int]``, ``int | None``, ``Point``)."""
    if tp is _NoneType or tp is None:
        return "None"
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    text = repr(tp)
    return text.replace("typing.", "")


# ---------------------------------------------------------------------------------------------
# Building converters


class _Builder:
    """Builds converters for one handler; records being built are shared, so recursion works."""

    def __init__(self) -> None:
        self._records: dict[Any, list[Convert | None]] = {}

    def build(self, tp: Any) -> Convert | None:
        """The converter for annotation ``tp``; None when values pass unchanged."""
        if tp is Any or tp is object:
            return None
        scalar = _SCALARS.get(tp) if isinstance(tp, type) or tp is None else None
        if scalar is not None:
            return scalar
        origin = get_origin(tp)
        args = get_args(tp)
        if origin is Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
            return self._union(tp, args)
        if origin is Literal:
            return _literal(args)
        if origin is typing.Annotated:
            return self.build(args[0])
        if tp in _LIST_ORIGINS or origin in _LIST_ORIGINS:
            return self._list(tp, args[0] if args else Any)
        if tp is tuple or origin is tuple:
            return self._tuple(tp, args)
        if tp in _DICT_ORIGINS or origin in _DICT_ORIGINS:
            return self._dict(tp, args)
        supertype = getattr(tp, "__supertype__", None)
        if supertype is not None:  # typing.NewType: the value is the supertype's
            return self.build(supertype)
        if isinstance(tp, type):
            if issubclass(tp, enum.Enum):
                return _enum(tp)
            if issubclass(tp, dict) and hasattr(tp, "__required_keys__"):
                return self._record(tp, self._typeddict_fields)
            if dataclasses.is_dataclass(tp):
                return self._record(tp, self._dataclass_fields)
            if attrs.has(tp):
                return self._record(tp, self._attrs_fields)
        raise TypeError(f"unsupported annotation {_describe(tp)}")

    def _union(self, tp: Any, members: tuple[Any, ...]) -> Convert | None:
        converters = [self.build(member) for member in members]
        if any(c is None for c in converters):
            return None  # a union with Any accepts everything
        rest = [c for m, c in zip(members, converters, strict=True) if m is not _NoneType]
        if len(rest) == 1 and len(members) == 2:
            inner = rest[0]
            assert inner is not None

            def optional(value: Any) -> Any:
                return None if value is None else inner(value)

            return optional
        # A member whose scalar type is exactly the value's JSON type wins (3 for int | float
        # stays an int); otherwise the members are tried in the order written.
        exact = {m: c for m, c in zip(members, converters, strict=True) if m in _SCALARS}
        ordered: list[Convert] = [c for c in converters if c is not None]
        expected = " | ".join(_describe(m) for m in members)

        def union(value: Any) -> Any:
            first = exact.get(type(value))
            if first is not None:
                return first(value)
            for convert in ordered:
                try:
                    return convert(value)
                except _Invalid:
                    pass
            raise _Invalid(f"expected {expected}, got {_kind(value)}")

        return union

    def _list(self, tp: Any, item_type: Any) -> Convert:
        item = self.build(item_type)

        def check(value: Any) -> list[Any]:
            if type(value) is not list:
                raise _Invalid(f"expected list, got {_kind(value)}")
            return value

        if item is None:
            return check
        fast = _pass_type(item)

        def convert(value: Any) -> list[Any]:
            if type(value) is not list:
                raise _Invalid(f"expected list, got {_kind(value)}")
            if fast is not None:
                for element in value:
                    if type(element) is not fast:
                        break
                else:
                    return value  # every item already has the wanted type
            out = []
            index = 0
            try:
                for index, element in enumerate(value):  # noqa: B007 - read in the except clause
                    out.append(item(element))
            except _Invalid as exc:
                raise _Invalid(f"item {index}: {exc.args[0]}") from None
            return out

        return convert

    def _tuple(self, tp: Any, args: tuple[Any, ...]) -> Convert:
        bare = tp is tuple or tp is typing.Tuple  # noqa: UP006
        if bare or (len(args) == 2 and args[1] is Ellipsis):
            listed = self._list(tp, Any if bare else args[0])

            def variable(value: Any) -> tuple[Any, ...]:
                return tuple(listed(value))

            return variable
        if args == ((),):  # tuple[()]
            args = ()
        items = [self.build(a) for a in args]
        size = len(items)

        def fixed(value: Any) -> tuple[Any, ...]:
            if type(value) is not list:
                raise _Invalid(f"expected list, got {_kind(value)}")
            if len(value) != size:
                raise _Invalid(f"expected {size} items, got {len(value)}")
            out = list(value)
            for index, convert in enumerate(items):
                if convert is not None:
                    try:
                        out[index] = convert(out[index])
                    except _Invalid as exc:
                        raise _Invalid(f"item {index}: {exc.args[0]}") from None
            return tuple(out)

        return fixed

    def _dict(self, tp: Any, args: tuple[Any, ...]) -> Convert:
        key_type, value_type = args if args else (str, Any)
        if key_type not in (str, Any):
            raise TypeError(f"unsupported annotation {_describe(tp)}: JSON object keys are strings")
        item = self.build(value_type)

        def check(value: Any) -> dict[str, Any]:
            if type(value) is not dict:
                raise _Invalid(f"expected dict, got {_kind(value)}")
            return value

        if item is None:
            return check
        fast = _pass_type(item)

        def convert(value: Any) -> dict[str, Any]:
            if type(value) is not dict:
                raise _Invalid(f"expected dict, got {_kind(value)}")
            if fast is not None:
                for element in value.values():
                    if type(element) is not fast:
                        break
                else:
                    return value
            out = {}
            key = ""
            try:
                for key, element in value.items():
                    out[key] = item(element)
            except _Invalid as exc:
                raise _Invalid(f"key {key!r}: {exc.args[0]}") from None
            return out

        return convert

    # -- records: dataclasses, attrs classes and TypedDicts ---------------------------------

    def _record(self, cls: type, fields: Callable[[type], list[tuple[str, str, Any, bool]]]) -> Convert:
        building = self._records.get(cls)
        if building is not None:
            # Recursive type: refer to the converter being built through its cell.
            def forward(value: Any) -> Any:
                convert = building[0]
                assert convert is not None
                return convert(value)

            return forward
        cell: list[Convert | None] = [None]
        self._records[cls] = cell
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:
            raise TypeError(f"cannot resolve the annotations of {cls.__name__}: {exc}") from None
        spec: list[tuple[str, str, type | None, Convert | None, bool]] = []
        for key, init, declared, default_required in fields(cls):
            tp = hints.get(key, declared)
            required = default_required
            marker = _required_marker(get_origin(tp))
            if marker is not None:
                # Required[...] / NotRequired[...] in a TypedDict: decisive even when string
                # annotations kept them from reaching __required_keys__.
                required = marker
                tp = get_args(tp)[0]
            field_convert = self._field(cls, key, tp)
            spec.append((key, init, _pass_type(field_convert), field_convert, required))
        known = frozenset(entry[0] for entry in spec)
        name = cls.__name__
        build: Callable[..., Any] = dict if issubclass(cls, dict) else cls

        def convert(value: Any) -> Any:
            if type(value) is not dict:
                raise _Invalid(f"expected {name} object, got {_kind(value)}")
            kwargs = {}
            for key, init, fast, field_convert, required in spec:
                if key in value:
                    element = value[key]
                    if field_convert is not None and type(element) is not fast:
                        try:
                            element = field_convert(element)
                        except _Invalid as exc:
                            raise _Invalid(f"field {key!r}: {exc.args[0]}") from None
                    kwargs[init] = element
                elif required:
                    raise _Invalid(f"missing field {key!r}")
            if len(kwargs) != len(value):
                extra = next(k for k in value if k not in known)
                raise _Invalid(f"unexpected field {extra!r}")
            try:
                return build(**kwargs)
            except (TypeError, ValueError) as exc:
                raise _Invalid(f"invalid {name}: {exc}") from None

        cell[0] = convert
        return convert

    def _field(self, cls: type, key: str, tp: Any) -> Convert | None:
        try:
            return self.build(tp)
        except TypeError as exc:
            raise TypeError(f"field {key!r} of {cls.__name__}: {exc}") from None

    @staticmethod
    def _dataclass_fields(record: type) -> list[tuple[str, str, Any, bool]]:
        return [
            (
                f.name,
                f.name,
                f.type,
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(record)
            if f.init
        ]

    @staticmethod
    def _attrs_fields(record: type) -> list[tuple[str, str, Any, bool]]:
        return [
            (a.name, a.alias or a.name, a.type if a.type is not None else Any, a.default is attrs.NOTHING)
            for a in attrs.fields(record)
            if a.init
        ]

    @staticmethod
    def _typeddict_fields(record: type) -> list[tuple[str, str, Any, bool]]:
        required: frozenset[str] = record.__required_keys__  # type: ignore[attr-defined]
        return [(key, key, tp, key in required) for key, tp in record.__annotations__.items()]


def _literal(values: tuple[Any, ...]) -> Convert:
    # Keyed by (type, value) so that True never matches 1, nor 1 match 1.0.
    allowed: dict[tuple[type, Any], Any] = {}
    for value in values:
        raw = value.value if isinstance(value, enum.Enum) else value
        allowed[(type(raw), raw)] = value
    expected = ", ".join(_show(v.value if isinstance(v, enum.Enum) else v) for v in values)

    def convert(value: Any) -> Any:
        if value is None or type(value) in (str, int, float, bool):
            found = allowed.get((type(value), value), allowed)
            if found is not allowed:
                return found
        raise _Invalid(f"expected one of {expected}, got {_show(value)}")

    return convert


def _enum(cls: type[enum.Enum]) -> Convert:
    members = {(type(m.value), m.value): m for m in cls}
    expected = ", ".join(_show(m.value) for m in cls)

    def convert(value: Any) -> Any:
        if value is None or type(value) in (str, int, float, bool):
            found = members.get((type(value), value))
            if found is not None:
                return found
        raise _Invalid(f"expected one of {expected}, got {_show(value)}")

    return convert


# ---------------------------------------------------------------------------------------------
# Handlers


def _count_text(name: str, low: int, high: int | None, got: int) -> str:
    if high is None:
        takes = f"at least {low} argument{'s' if low != 1 else ''}"
    elif low == high:
        takes = f"{low} argument{'s' if low != 1 else ''}"
    else:
        takes = f"{low} to {high} arguments"
    return f"Handler '{name}' takes {takes}, got {got}"


def make_binder(fn: Callable[..., Any], name: str) -> Binder | None:
    """Build the argument binder of handler ``fn`` registered for event ``name``.

    Returns None when no parameter is annotated: the arguments then pass through as they are,
    and Python's own arity check applies (PROTOCOL.md §7.3). Raises :class:`TypeError` at
    registration for an annotation that cannot be resolved or converted, and for a keyword-only
    parameter without a default (positional JSON arguments can never fill it).
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # builtins and other callables without a signature: untyped
    params = list(signature.parameters.values())
    if all(p.annotation is inspect.Parameter.empty for p in params):
        return None
    try:
        signature = inspect.signature(fn, eval_str=True)
    except Exception as exc:
        raise TypeError(f"handler {name!r}: cannot resolve its annotations: {exc}") from None
    builder = _Builder()
    positional: list[tuple[str, Convert | None]] = []
    variadic: tuple[str, Convert | None] | None = None
    low = 0
    for param in signature.parameters.values():
        kind = param.kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if kind is inspect.Parameter.KEYWORD_ONLY:
            if param.default is inspect.Parameter.empty:
                raise TypeError(
                    f"handler {name!r}: keyword-only parameter {param.name!r} has no default, "
                    "and JSON arguments are positional"
                )
            continue
        annotation = param.annotation
        convert = None
        if annotation is not inspect.Parameter.empty:
            try:
                convert = builder.build(annotation)
            except TypeError as exc:
                raise TypeError(f"handler {name!r}, parameter {param.name!r}: {exc}") from None
        if kind is inspect.Parameter.VAR_POSITIONAL:
            variadic = (param.name, convert)
        else:
            positional.append((param.name, convert))
            if param.default is inspect.Parameter.empty:
                low = len(positional)
    high = None if variadic is not None else len(positional)
    return _binder(name, positional, variadic, low, high)


def _binder(
    name: str,
    positional: list[tuple[str, Convert | None]],
    variadic: tuple[str, Convert | None] | None,
    low: int,
    high: int | None,
) -> Binder:
    steps = [(index, pname, _pass_type(c), c) for index, (pname, c) in enumerate(positional) if c is not None]
    count = len(positional)
    limit = sys.maxsize if high is None else high
    rest_name, rest = variadic if variadic is not None else ("", None)

    def bind(args: tuple[Any, ...]) -> tuple[Any, ...] | list[Any]:
        n = len(args)
        if n < low or n > limit:
            raise ArgumentError(_count_text(name, low, high, n))
        if not steps and rest is None:
            return args
        out = list(args)
        for index, pname, fast, convert in steps:
            if index >= n:
                break
            value = out[index]
            if type(value) is fast:
                continue
            try:
                out[index] = convert(value)
            except _Invalid as exc:
                raise ArgumentError(f"Invalid argument '{pname}': {exc.args[0]}") from None
        if rest is not None:
            for index in range(count, n):
                try:
                    out[index] = rest(out[index])
                except _Invalid as exc:
                    where = f"{rest_name}[{index - count}]"
                    raise ArgumentError(f"Invalid argument '{where}': {exc.args[0]}") from None
        return out

    return bind
