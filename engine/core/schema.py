"""Config schemas: dataclasses read as OmegaConf structured configs, with ranges, checked when a config loads.

A schema is a dataclass whose fields are a config's keys: a nested dataclass for a section, `dict[str, X]` for
a mapping of names, `list[X]`, and scalars (`int`, `float`, `bool`, `str`, unions, `X | None`); a field without
a default (`MISSING`) is required. The helpers below (`integer`, `real`, `one_of`, `matching`, `integers`,
`reals`) attach a rule to a field; a section may define `check(self)` for rules between its fields, raising
`Invalid.value(key, value, expected)`. `validate` reads a config against a schema and raises one ConfigError
naming the source, the key, the value and what was expected, e.g.

    world config my.yaml: sampler.ddim_steps must be an integer in 1..1000, got 0
    world config my.yaml: sampler.ddim_step is unknown (did you mean sampler.ddim_steps?)

The config itself is read by OmegaConf against the schema (`OmegaConf.structured` + `merge`, then `to_object`),
which also resolves its `${...}` interpolations; `validate` returns the typed dataclass instance.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from engine.errors import ConfigError

RULE = "rule"
INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")
_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist, _SHOW.maxdict = 60, 60, 6, 4


class Invalid(Exception):
    """A key of a config and what is wrong with it (`problem` follows the key: "must be ..., got ...")."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} {problem}")
        self.key, self.problem = key, problem

    @classmethod
    def value(cls, key: str, value: Any, expected: str) -> Invalid:
        return cls(key, f"must be {expected}, got {show(value)}")

    def under(self, prefix: str) -> Invalid:
        """The same problem with the key seen from the enclosing section `prefix`."""
        return Invalid(join(prefix, self.key), self.problem)


@dataclass(frozen=True)
class Rule:
    """What a field's value must be: `test(value)` says whether it is, `expected` says it in words."""

    expected: str
    test: Callable[[Any], bool]


def show(value: Any) -> str:
    """A value as an error message quotes it (long values shortened)."""
    return _SHOW.repr(value)


def join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def _field(default: Any, rule: Rule) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={RULE: rule})
    return field(default=default, metadata={RULE: rule})


def _span(low: float | None, high: float | None, above: float | None = None) -> str:
    if above is not None:
        return f"> {above}" + (f" and <= {high}" if high is not None else "")
    if low is not None and high is not None:
        return f"in {low}..{high}"
    return f">= {low}" if low is not None else f"<= {high}"


def _within(value: float, low: float | None, high: float | None, above: float | None) -> bool:
    return ((low is None or value >= low) and (high is None or value <= high)
            and (above is None or value > above))


def integer(default: Any = MISSING, low: int | None = 1, high: int | None = None) -> Any:
    """An `int` field in low..high (None: no bound)."""
    return _field(default, Rule(f"an integer {_span(low, high)}", lambda v: _within(v, low, high, None)))


def real(default: Any = MISSING, low: float | None = None, high: float | None = None, *, above: float | None = None,
         infinite: bool = False) -> Any:
    """A `float` field, finite (or also +-inf with `infinite`), >= low or > above, <= high."""
    kind = "a number" if infinite else "a finite number"
    expected = kind if low is None and high is None and above is None else f"{kind} {_span(low, high, above)}"
    return _field(default, Rule(expected, lambda v: not math.isnan(v) and (infinite or math.isfinite(v))
                                and _within(v, low, high, above)))


def one_of(default: Any, *choices: Any) -> Any:
    """A field that takes one of `choices`."""
    return _field(default, Rule(f"one of {', '.join(map(str, choices))}", lambda v: v in choices))


def matching(default: Any, pattern: re.Pattern, expected: str) -> Any:
    """A `str` field that `pattern` matches whole."""
    return _field(default, Rule(expected, lambda v: pattern.fullmatch(v) is not None))


def integers(default: Any = MISSING, low: int | None = 1, high: int | None = None, length: int | None = None) -> Any:
    """A `list[int]` field of `length` items (None: one or more), each in low..high."""
    return _list_field(default, "integers", low, high, length, None)


def reals(default: Any = MISSING, low: float | None = None, high: float | None = None,
          length: int | None = None) -> Any:
    """A `list[float]` field of `length` finite items (None: one or more), each in low..high."""
    return _list_field(default, "finite numbers", low, high, length, lambda v: math.isfinite(v))


def _list_field(default: Any, kind: str, low: float | None, high: float | None, length: int | None,
                extra: Callable[[float], bool] | None) -> Any:
    count = f"{length}" if length is not None else "one or more"
    expected = f"a list of {count} {kind}" + (f" {_span(low, high)}" if low is not None or high is not None else "")

    def test(values: list) -> bool:
        sized = len(values) == length if length is not None else len(values) >= 1
        return sized and all((extra is None or extra(v)) and _within(v, low, high, None) for v in values)

    return _field(default, Rule(expected, test))


def check_patch_size(patch_size: int, **sizes: int) -> None:
    """`patch_size` divides each of the sizes (given as key=value, named in the error)."""
    for key, size in sizes.items():
        if size % patch_size:
            raise Invalid.value("patch_size", patch_size, f"a divisor of {key} ({size})")


def gigabytes(nbytes: float) -> str:
    """A size in GiB, or MiB below one GiB (so that small sizes do not all read "0.0 GiB")."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def schema_keys(schema: type) -> list[str]:
    """The field names of a schema dataclass."""
    return [f.name for f in fields(schema)]


# -- reading a config against a schema ----------------------------------------------------------------------


Source = str | Callable[[str], str]


def validate(cfg: DictConfig, schema: type, source: Source) -> Any:
    """`cfg` read against `schema`: the typed dataclass instance, or a ConfigError naming the source (`source`, or
    `source(key)` for the key at fault: the override that set it) and the key."""

    def fail(key: str, text: str) -> ConfigError:
        where = source(key) if callable(source) else source
        return ConfigError(f"{where}{text}")

    raw = OmegaConf.to_container(cfg, resolve=False)
    try:
        _match(raw, schema, "")
        merged = OmegaConf.merge(_structured(schema), cfg)
        typed = OmegaConf.to_object(merged)
        _check_object(typed, "")
    except Invalid as exc:
        given = _raw_value(raw, exc.key)
        referred = INTERPOLATION.findall(given) if isinstance(given, str) else []
        note = f" (its value is {given})" if referred else ""
        raise fail(referred[0] if referred else exc.key, f": {exc.key} {exc.problem}{note}") from None
    except MissingMandatoryValue as exc:
        raise fail(str(exc.full_key), f" lacks the required key '{exc.full_key}'") from None
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", None) or "")
        raise fail(key, f": {key or 'a value'}: {_first_line(exc)}") from None
    except RecursionError:
        raise fail("", ": its ${...} interpolations refer to each other in a loop") from None
    return typed


def _raw_value(raw: Any, key: str) -> Any:
    """The value at dotted `key` of a plain container as written (None where the key is not there)."""
    for part in re.split(r"\.|\[(\d+)\]", key):
        if part is None or part == "":
            continue
        if isinstance(raw, Mapping):
            raw = raw.get(part)
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw


@cache
def _structured(schema: type) -> DictConfig:
    """The schema as an OmegaConf structured config (made once: `merge` copies it)."""
    return OmegaConf.structured(schema)


def _first_line(exc: OmegaConfBaseException) -> str:
    text = str(getattr(exc, "msg", None) or exc)
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


@cache
def _hints(schema: type) -> dict[str, Any]:
    """Field name -> type hint of a schema dataclass (class variables left out)."""
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in fields(schema)}


def _describe(hint: Any) -> str:
    """A type hint in words, for "must be ..." messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [_describe(arg) for arg in args if arg is not type(None)]
        return " or ".join(words) + (" or null" if type(None) in args else "")
    if is_dataclass(hint):
        return f"a mapping of {', '.join(schema_keys(hint))}"
    if origin is dict:
        return f"a mapping of names to {_describe(args[1])}" if args and args[1] is not Any else "a mapping"
    if origin is list:
        return f"a list of {_plural(args[0])}" if args else "a list"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", Any: "any value"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(hint, _describe(hint))


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _scalar_fits(value: Any, hint: Any) -> bool:
    """Whether OmegaConf reads `value` as a `hint` (numbers also from their text: "inf", "10")."""
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float) and isinstance(value, str):
        try:
            hint(value)
        except ValueError:
            return False
        return True
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _match(value: Any, hint: Any, key: str) -> None:
    """Raise Invalid where `value` (a plain container, interpolations unresolved) does not have the shape and the
    scalar types of `hint`, or holds a key the schema does not know."""
    if hint is Any or _is_interpolation(value) or value == MISSING:
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [arg for arg in args if arg is not type(None)]
        problems = []
        for option in options:
            try:
                _match(value, option, key)
                return
            except Invalid as exc:
                problems.append(exc)
        if len(options) == 1 or isinstance(value, Mapping | list):
            raise problems[0]
        raise Invalid.value(key or "the config", value, _describe(hint))
    if is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise Invalid.value(key or "the config", value, _describe(hint))
        known = _hints(hint)
        for name, item in value.items():
            if name not in known:
                raise _unknown(key, str(name), item, hint)
            _match(item, known[name], join(key, str(name)))
        return
    if origin is dict:
        if not isinstance(value, Mapping):
            raise Invalid.value(key, value, _describe(hint))
        for name, item in value.items():
            _match(item, args[1] if args else Any, join(key, str(name)))
        return
    if origin is list:
        if not isinstance(value, list):
            raise Invalid.value(key, value, _describe(hint))
        for index, item in enumerate(value):
            _match(item, args[0] if args else Any, f"{key}[{index}]")
        return
    if value is None or not _scalar_fits(value, hint):
        raise Invalid.value(key, value, _describe(hint))


def _unknown(prefix: str, name: str, value: Any, schema: type) -> Invalid:
    """An unknown key, with the nearest valid one (followed into its section) or the valid ones."""
    suggestion = _nearest(name, value, schema)
    if suggestion:
        return Invalid(join(prefix, name), f"is unknown (did you mean {join(prefix, suggestion)}?)")
    return Invalid(join(prefix, name), f"is unknown (expected one of {', '.join(schema_keys(schema))})")


def _nearest(name: str, value: Any, schema: type) -> str | None:
    close = difflib.get_close_matches(name.lstrip("+~"), schema_keys(schema), n=1, cutoff=0.6)
    if not close:
        return None
    hint = _hints(schema)[close[0]]
    sections = [arg for arg in (hint, *typing.get_args(hint)) if is_dataclass(arg)]
    if sections and isinstance(value, Mapping) and len(value) == 1:
        inner_name, inner_value = next(iter(value.items()))
        known = schema_keys(sections[0])
        inner = (str(inner_name) if inner_name in known
                 else _nearest(str(inner_name), inner_value, sections[0]))
        if inner:
            return f"{close[0]}.{inner}"
    return close[0]


def _check_object(obj: Any, path: str) -> None:
    """Each field's rule, each nested section, then the section's own `check()`."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = join(path, f.name)
        rule = f.metadata.get(RULE)
        if rule is not None and value is not None and not rule.test(value):
            raise Invalid.value(key, value, rule.expected)
        _check_value(value, key)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except Invalid as exc:
            raise exc.under(path) from None


def _check_value(value: Any, key: str) -> None:
    if is_dataclass(value):
        _check_object(value, key)
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_value(item, join(key, str(name)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{key}[{index}]")
