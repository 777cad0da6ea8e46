"""Config values in and out: YAML files (and the packaged recipes), dotted command-line overrides,
and the typed dataclasses they become, with the one error that names the key at fault.

What this module owns:
- ``ConfigError``: a configuration value or key is wrong; its message names it (and ``key`` the
  dotted key, when one value is at fault).
- ``from_dict(cls, data)``: a dataclass built from a dict, every key checked against its fields
  (unknown keys are errors listing the known ones) and every value coerced to its annotation
  (``int``, ``float``, ``bool``, ``str``, ``Literal``, ``list``, unions with ``None``, nested
  dataclasses) or refused with a ConfigError naming the dotted key; integers of 2**63 or more are
  refused before a message tries to print them. ``to_dict`` is the way back.
- ``apply_overrides(raw, overrides)``: dotted keys (``train.lr``) set in a nested dict, each value
  read as YAML where it is YAML, else kept as the string.
- ``load_yaml(path)``: a YAML file read as a mapping (a bare recipe name, ``tiny``, is looked up in
  the packaged recipes, ``RECIPES``, by ``resolve_recipe``); every way reading or parsing fails is
  one ConfigError naming the file.

Generic: it knows no section of a run (``lmkit.config`` holds those, ``lmkit.data.curate.config``
its own) and imports nothing from lmkit except ``lmkit.errors``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from lmkit.errors import LmkitError


class ConfigError(LmkitError, ValueError):
    """A configuration value or key is wrong; the message names it.

    ``key`` is the dotted key with its section (``train.lr``) when one value is at fault, so
    that :func:`lmkit.config.load_run_config` can say whether it came from the file or a command-line flag.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# Integers in a config are sizes and counts: far below this. Larger ones (YAML reads any number of
# digits) are refused before a message tries to print them (Python will not print 4,300+ digits).
_MAX_INT = 2**63


def _refuse_huge_ints(value: Any, where: str) -> None:
    """ConfigError if ``value`` holds (at any depth) an integer of magnitude 2**63 or more."""
    stack, seen = [value], set()
    while stack:
        v = stack.pop()
        if id(v) in seen:  # YAML aliases can make a list contain itself
            continue
        seen.add(id(v))
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= _MAX_INT:
            raise ConfigError(f"{where} must be below 2**63, got an integer of {v.bit_length()} bits", where)
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming ``where``."""
    _refuse_huge_ints(value, where)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        none_given = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if none_given and type(None) in get_args(tp):
            return None
        errors = []
        for a in args:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {'|'.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        (item,) = get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a dict, checking every key and value."""
    if not isinstance(data, dict):
        _refuse_huge_ints(data, where or "config")  # before printing it
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    for key in data:
        _refuse_huge_ints(key, f"a key of {where or 'the config'}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key {path!r} (known: {', '.join(sorted(names))})")
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, path)
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``train.lr``) in a nested dict; values stay strings for _coerce to type."""
    out = copy.deepcopy(raw) if raw else {}
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"cannot set {dotted!r}: {p!r} is not a section")
            node = nxt
        if isinstance(value, str):
            try:
                value = _parse_yaml(value)
            except ConfigError:  # not YAML: the string itself (_coerce then checks its type)
                pass
        node[parts[-1]] = value
    return out


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load``, with every way it fails as one ConfigError: bad syntax, a value its
    constructors refuse (a date 2001-02-30, an integer of thousands of digits), nesting too deep."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError("not readable YAML (nested too deeply)") from None
    except (ValueError, OverflowError) as e:
        why = "a number with too many digits" if "digits" in str(e) else str(e).splitlines()[0][:80]
        raise ConfigError(f"not readable YAML (a value cannot be read: {why})") from None


RECIPES = Path(__file__).resolve().parent / "configs"


def resolve_recipe(path: str | Path) -> Path:
    """``path`` if it exists, else the packaged recipe a bare name (``tiny``) names, else ``path``."""
    p = Path(path)
    if p.exists() or p.parent != Path("."):
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    recipe = RECIPES / name
    return recipe if recipe.is_file() else p


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = resolve_recipe(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not a YAML config (not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start})"
        ) from None
    try:
        data = _parse_yaml(text)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping with model/train/data sections")
    return data
