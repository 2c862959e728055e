"""The JSON record a PNG carries, checked against one typed schema before use.

A PNG given to `--replay` may be crafted: its record is read with size and
depth limits and every field is checked for type and range here, so what
reaches `DreamRequest` or `visualize.Settings` is plain, bounded data and a
bad record is one `UserError`, never a traceback. `SCHEMA` is the record's
format; a record from a newer format is refused (records written before the
field existed are format 1). A spec is a small value (`Int`, `Name`, `Obj`,
...): extending the record is adding a field to a spec.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from dream_jax.errors import UserError

SCHEMA = 1
MAX_TEXT = 256 * 1024   # characters of JSON: far above any real record
MAX_DEPTH = 8           # a dream record nests 4 deep
MAX_STR = 4096
MAX_LIST = 4096
MAX_NAME_BYTES = 255    # a file name, as file systems bound it
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RecordError(UserError):
    """A record that does not fit the schema; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Int:
    lo: int = -(2**63)
    hi: int = 2**63 - 1

    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError(f"{where}: expected an integer, got {_kind(value)}")
        if not self.lo <= value <= self.hi:
            raise RecordError(f"{where}: {value} is outside {self.lo}..{self.hi}")
        return value


@dataclasses.dataclass(frozen=True)
class Float:
    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise RecordError(f"{where}: expected a finite number, got {_kind(value)}")
        return float(value)


@dataclasses.dataclass(frozen=True)
class Bool:
    def check(self, value, where):
        if not isinstance(value, bool):
            raise RecordError(f"{where}: expected true or false, got {_kind(value)}")
        return value


@dataclasses.dataclass(frozen=True)
class Str:
    max_len: int = MAX_STR

    def check(self, value, where):
        if not isinstance(value, str):
            raise RecordError(f"{where}: expected a string, got {_kind(value)}")
        if len(value) > self.max_len:
            raise RecordError(f"{where}: {len(value):,} characters, over {self.max_len:,}")
        return value


@dataclasses.dataclass(frozen=True)
class Sha256:
    def check(self, value, where):
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise RecordError(f"{where}: expected a sha256 (64 hex digits)")
        return value


@dataclasses.dataclass(frozen=True)
class Name:
    """A bare file name: no folder, no '..', nothing a path could hide in."""

    def check(self, value, where):
        Str(MAX_STR).check(value, where)
        if not is_bare_name(value):
            raise RecordError(f"{where}: {_clip(value)!r} is not a bare file name "
                              f"(at most {MAX_NAME_BYTES} bytes, no folder)")
        return value


@dataclasses.dataclass(frozen=True)
class Maybe:
    spec: Any

    def check(self, value, where):
        return None if value is None else self.spec.check(value, where)


@dataclasses.dataclass(frozen=True)
class List:
    item: Any
    max_len: int = MAX_LIST

    def check(self, value, where):
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list, got {_kind(value)}")
        if len(value) > self.max_len:
            raise RecordError(f"{where}: {len(value):,} items, over {self.max_len:,}")
        return [self.item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]


@dataclasses.dataclass(frozen=True)
class Pair:
    first: Any
    second: Any

    def check(self, value, where):
        if not isinstance(value, list) or len(value) != 2:
            raise RecordError(f"{where}: expected a pair, got {_kind(value)}")
        return (self.first.check(value[0], f"{where}[0]"),
                self.second.check(value[1], f"{where}[1]"))


@dataclasses.dataclass(frozen=True)
class Table:
    """An object of short strings to short strings (e.g. versions of a build)."""
    max_len: int = 64

    def check(self, value, where):
        if not isinstance(value, dict) or len(value) > self.max_len:
            raise RecordError(f"{where}: expected an object of at most {self.max_len} strings")
        return {Str(256).check(k, f"{where} key"): Str(256).check(v, f"{where}.{_clip(k)}")
                for k, v in value.items()}


@dataclasses.dataclass(frozen=True)
class Obj:
    """A JSON object: `required` and `optional` fields; others are ignored
    (a later writer may add some) unless `closed`."""
    required: dict
    optional: dict = dataclasses.field(default_factory=dict)
    closed: bool = False

    def check(self, value, where):
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, got {_kind(value)}")
        missing = sorted(set(self.required) - set(value))
        if missing:
            raise RecordError(f"{where}: missing field {missing[0]!r}")
        unknown = sorted(set(value) - set(self.required) - set(self.optional))
        if self.closed and unknown:
            raise RecordError(f"{where}: unknown field {_clip(unknown[0])!r}")
        out = {}
        for key, spec in {**self.required, **self.optional}.items():
            if key in value:
                out[key] = spec.check(value[key], f"{where}.{key}")
        return out


def is_bare_name(name: str) -> bool:
    """A file name with no folder part, no '..', no control characters, and at
    most MAX_NAME_BYTES bytes."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and not any(ord(c) < 32 or ord(c) == 127 for c in name)
            and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES)


def fields_spec(cls, extra: dict | None = None) -> Obj:
    """A closed Obj for a dataclass of int/float/str/bool fields, typed by each
    field's default (ranges are the dataclass's own checks), plus `extra`
    required fields."""
    kinds = {bool: Bool(), int: Int(), float: Float(), str: Str()}
    fields = dataclasses.fields(cls)
    odd = [f.name for f in fields if type(f.default) not in kinds]
    if odd:  # a programming error: give the field a spec by hand
        raise TypeError(f"{cls.__name__}: no record spec for field(s) {odd}")
    return Obj({**{f.name: kinds[type(f.default)] for f in fields}, **(extra or {})},
               closed=True)


def loads(text: str, spec: Obj, origin: str) -> dict:
    """`text` parsed and checked against `spec` plus the `schema` field."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise RecordError(f"{origin}: dream_jax metadata over {MAX_TEXT:,} characters")
    if _depth(text) > MAX_DEPTH:
        raise RecordError(f"{origin}: dream_jax metadata nested over {MAX_DEPTH} deep")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:  # ValueError: also ints over 4300 digits
        raise RecordError(f"{origin}: unreadable dream_jax metadata ({_clip(str(e))})") from None
    schema = value.get("schema", 1) if isinstance(value, dict) else 1
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise RecordError(f"{origin}: dream_jax metadata has a bad schema field")
    if schema > SCHEMA:
        raise RecordError(f"{origin}: dream_jax metadata of format {schema}, newer than this "
                          f"dream_jax reads ({SCHEMA}): upgrade dream_jax to replay it")
    try:
        return spec.check(value, "record")
    except RecordError as e:
        raise RecordError(f"{origin}: bad dream_jax metadata: {e}") from None


def _depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (linear, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
