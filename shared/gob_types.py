"""Go `encoding/gob` vocabulary: type descriptors, wire primitives, and writing one value.

Stream state (type ids, definitions, framing, decoding) lives in `shared.gob`.

A Go type is described by an immutable, hashable descriptor: the basic singletons
(`BOOL`, `INT`, `UINT`, `FLOAT`, `STRING`, `BYTES`, `COMPLEX`) or `Struct`, `Slice`,
`Array`, `Map`, `Ptr`. Python values: bool, int, float, str, bytes, complex, dict for
a struct (field name -> value), list for a slice or array, dict for a map, and for a
pointer either the pointee's value or None (nil). Pointers are flattened on the wire,
as in Go: only a nil pointer is visible (its struct field is omitted).

Go's zero values in Python: False, 0, 0.0, "", b"", 0j; [] for a slice; a list of
zero elements for an array; None for a map (Go's nil map: a nil map field is omitted,
an empty non-nil map `{}` is sent); None for a pointer; a dict of zero fields for a struct.

`name` on Struct is Go's type name as sent in the wire type (`peerSummary`); on Slice,
Map and Array it is optional and only matters for byte-exact output, because Go names
an unnamed composite by its Go spelling (`[]mesh.PeerName`) when the type is first met
as a struct field. Go's decoder ignores all names.
"""
from __future__ import annotations

import struct as _struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from shared.errors import LocalProtocolError, RemoteProtocolError

MAX_MESSAGE = 10 * 1024 * 1024  # bytes; mesh's maxTCPMsgSize, far above any real gob blob
MAX_DEPTH = 100  # nesting of values while decoding; bounds Python recursion
FIRST_USER_ID = 65  # what Go 1.19 (weave 2.8's toolchain) gives the first user type
FIRST_REMOTE_ID = 64  # Go's decoder refuses definitions of ids below this (firstUserId)


class GobError(RemoteProtocolError):
    """Malformed gob input. `offset` is the stream position where it was found (None if
    the raiser could not tell, e.g. a caller re-checking a decoded value)."""

    code = "gob_error"

    def __init__(self, reason: str, *, offset: int | None = None) -> None:
        where = "" if offset is None else f" (at stream offset {offset})"
        super().__init__(f"gob: {reason}{where}", reason=reason, offset=offset)
        self.reason = reason
        self.offset = offset


class NeedMoreData(Exception):
    """The stream does not hold a complete next value yet; `feed()` more bytes."""


@dataclass(frozen=True)
class Basic:
    """A predefined gob type, identified by its fixed type id."""

    name: str
    id: int

    def __repr__(self) -> str:
        return self.name.upper()


BOOL = Basic("bool", 1)
INT = Basic("int", 2)
UINT = Basic("uint", 3)
FLOAT = Basic("float", 4)
BYTES = Basic("bytes", 5)
STRING = Basic("string", 6)
COMPLEX = Basic("complex", 7)
INTERFACE_ID = 8
BASICS = {t.id: t for t in (BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX)}


@dataclass(frozen=True)
class Struct:
    """A Go struct: exported fields in declaration order (the wire numbers them so)."""

    name: str
    fields: tuple[tuple[str, "GoType"], ...]

    def __post_init__(self) -> None:
        fields = tuple((str(n), t) for n, t in self.fields)
        names = [n for n, _ in fields]
        if len(set(names)) != len(names) or "" in names:
            raise LocalProtocolError(f"gob struct {self.name!r}: field names must be unique "
                                     "and non-empty", struct=self.name, fields=names)
        object.__setattr__(self, "fields", fields)


@dataclass(frozen=True)
class Slice:
    elem: "GoType"
    name: str = ""


@dataclass(frozen=True)
class Array:
    elem: "GoType"
    length: int
    name: str = ""


@dataclass(frozen=True)
class Map:
    key: "GoType"
    elem: "GoType"
    name: str = ""


@dataclass(frozen=True)
class Ptr:
    elem: "GoType"


GoType = Union[Basic, Struct, Slice, Array, Map, Ptr]


def base(t: GoType) -> GoType:
    """The type under any number of pointers (what gob puts on the wire)."""
    while isinstance(t, Ptr):
        t = t.elem
    return t


_BASIC_ZERO = {1: False, 2: 0, 3: 0, 4: 0.0, 5: b"", 6: "", 7: 0j}


def zero(t: GoType):
    """Go's zero value of `t`, in the Python mapping above (fresh mutable objects)."""
    if isinstance(t, Basic):
        return _BASIC_ZERO[t.id]
    if isinstance(t, Struct):
        return {n: zero(ft) for n, ft in t.fields}
    if isinstance(t, Slice):
        return []
    if isinstance(t, Array):
        return [zero(t.elem) for _ in range(t.length)]
    return None  # Map, Ptr


@dataclass(frozen=True)
class Wire:
    """One type definition as carried in a gob stream (Go's wireType, flattened).

    kind: "struct" (fields = (name, type id) pairs), "slice" / "array" (elem, length),
    "map" (key, elem) or "gobencoder" (opaque bytes produced by a GobEncoder).
    """

    kind: str
    name: str
    elem: int = 0
    key: int = 0
    length: int = 0
    fields: tuple[tuple[str, int], ...] = ()


# Go's own descriptors of type definitions (type.go). Their ids are fixed by Go.
COMMON_TYPE = Struct("CommonType", (("Name", STRING), ("Id", INT)))
ARRAY_TYPE = Struct("arrayType", (("CommonType", COMMON_TYPE), ("Elem", INT), ("Len", INT)))
SLICE_TYPE = Struct("sliceType", (("CommonType", COMMON_TYPE), ("Elem", INT)))
FIELD_TYPE = Struct("fieldType", (("Name", STRING), ("Id", INT)))
STRUCT_TYPE = Struct("structType", (("CommonType", COMMON_TYPE), ("Field", Slice(FIELD_TYPE))))
MAP_TYPE = Struct("mapType", (("CommonType", COMMON_TYPE), ("Key", INT), ("Elem", INT)))
GOB_ENCODER_TYPE = Struct("gobEncoderType", (("CommonType", COMMON_TYPE),))
WIRE_TYPE = Struct("wireType", (
    ("ArrayT", Ptr(ARRAY_TYPE)),
    ("SliceT", Ptr(SLICE_TYPE)),
    ("StructT", Ptr(STRUCT_TYPE)),
    ("MapT", Ptr(MAP_TYPE)),
    ("GobEncoderT", Ptr(GOB_ENCODER_TYPE)),
    ("BinaryMarshalerT", Ptr(GOB_ENCODER_TYPE)),
    ("TextMarshalerT", Ptr(GOB_ENCODER_TYPE)),
))
WIRE_TYPE_ID = 16
WIRE_TYPE_FIELD_NAMES = tuple(n for n, _ in WIRE_TYPE.fields)
BUILTIN_IDS: dict[GoType, int] = {
    WIRE_TYPE: 16, ARRAY_TYPE: 17, COMMON_TYPE: 18, SLICE_TYPE: 19, STRUCT_TYPE: 20,
    FIELD_TYPE: 21, Slice(FIELD_TYPE): 22, MAP_TYPE: 23, GOB_ENCODER_TYPE: 24,
}


def type_id_of(t: GoType, ids: dict[GoType, int]) -> int:
    t = base(t)
    return t.id if isinstance(t, Basic) else ids[t]


def to_wire(t: GoType, ids: dict[GoType, int]) -> Wire:
    """The definition Go sends for composite type `t`, given ids of it and its parts."""
    def tid(x: GoType) -> int:
        return type_id_of(x, ids)

    if isinstance(t, Struct):
        return Wire("struct", t.name, fields=tuple((n, tid(ft)) for n, ft in t.fields))
    if isinstance(t, Slice):
        return Wire("slice", t.name, elem=tid(t.elem))
    if isinstance(t, Array):
        return Wire("array", t.name, elem=tid(t.elem), length=t.length)
    if isinstance(t, Map):
        return Wire("map", t.name, key=tid(t.key), elem=tid(t.elem))
    raise TypeError(f"{t!r} has no wire definition")


_WIRE_FIELD = {"array": "ArrayT", "slice": "SliceT", "struct": "StructT", "map": "MapT",
               "gobencoder": "GobEncoderT"}


def wire_to_value(w: Wire, type_id: int) -> dict:
    """`w` as a value of WIRE_TYPE, ready to be gob-encoded."""
    body: dict = {"CommonType": {"Name": w.name, "Id": type_id}}
    if w.kind == "struct":
        body["Field"] = [{"Name": n, "Id": i} for n, i in w.fields]
    elif w.kind == "map":
        body.update(Key=w.key, Elem=w.elem)
    elif w.kind in ("slice", "array"):
        body["Elem"] = w.elem
        if w.kind == "array":
            body["Len"] = w.length
    return {_WIRE_FIELD[w.kind]: body}


def wire_from_value(v: dict) -> Wire | None:
    """Inverse of wire_to_value; None unless exactly one kind is present."""
    present = [(k, v[k]) for k in WIRE_TYPE_FIELD_NAMES if v.get(k) is not None]
    if len(present) != 1:
        return None
    key, body = present[0]
    name = body["CommonType"]["Name"]
    if key == "StructT":
        return Wire("struct", name, fields=tuple((f["Name"], f["Id"]) for f in body["Field"]))
    if key == "SliceT":
        return Wire("slice", name, elem=body["Elem"])
    if key == "ArrayT":
        return Wire("array", name, elem=body["Elem"], length=body["Len"])
    if key == "MapT":
        return Wire("map", name, key=body["Key"], elem=body["Elem"])
    return Wire("gobencoder", name)


BUILTIN_WIRES: dict[int, Wire] = {i: to_wire(t, BUILTIN_IDS) for t, i in BUILTIN_IDS.items()}


# --- primitives -------------------------------------------------------------------

def put_uint(out: bytearray, x: int) -> None:
    """Gob uint: < 128 in one byte, else the negated byte count then big-endian bytes."""
    if x < 0x80:
        out.append(x)
        return
    data = x.to_bytes((x.bit_length() + 7) // 8, "big")
    out.append(256 - len(data))
    out += data


def put_int(out: bytearray, i: int) -> None:
    """Gob int: sign in bit 0 (i<<1, or (^i<<1)|1 when negative), then as a uint."""
    put_uint(out, (~i << 1) | 1 if i < 0 else i << 1)


def put_float(out: bytearray, f: float) -> None:
    """Gob float: IEEE-754 bits byte-reversed (so small exponents come first), as a uint."""
    put_uint(out, int.from_bytes(_struct.pack(">d", f), "little"))


class Reader:
    """Reads primitives from `data[pos:end]`; `origin` is the stream offset of data[0]."""

    def __init__(self, data: bytes | bytearray, pos: int, end: int, origin: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.origin = origin

    def error(self, reason: str) -> GobError:
        return GobError(reason, offset=self.origin + self.pos)

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise self.error(f"need {n} bytes, only {self.end - self.pos} left in message")
        chunk = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return chunk

    def uint(self) -> int:
        if self.pos >= self.end:
            raise self.error("unexpected end of message")
        b = self.data[self.pos]
        self.pos += 1
        if b < 0x80:
            return b
        n = 256 - b
        if n > 8:
            raise self.error(f"invalid uint length byte 0x{b:02x}")
        return int.from_bytes(self.take(n), "big")

    def int(self) -> int:
        u = self.uint()
        return ~(u >> 1) if u & 1 else u >> 1

    def float(self) -> float:
        return _struct.unpack(">d", self.uint().to_bytes(8, "little"))[0]

    def count(self) -> int:
        """An element count; every element takes at least one byte, so bound it so."""
        n = self.uint()
        if n > self.remaining():
            raise self.error(f"count {n} exceeds the {self.remaining()} bytes left")
        return n


# --- values (stateless; the Encoder adds type definitions and framing) -----------

def misfit(t: GoType, value, where: str, why: str = "does not fit") -> LocalProtocolError:
    return LocalProtocolError(f"gob: {value!r} {why} {t!r} at {where}",
                              path=where, go_type=t, value=value)


def put_value(out: bytearray, t: GoType, v, where: str) -> None:
    """Write one value of type `t` (no field header). None means Go's zero value."""
    if v is None and isinstance(t, Ptr):
        raise misfit(t, v, where, "nil pointer element of")
    t = base(t)
    if isinstance(t, Basic):
        _put_basic(out, t, v, where)
    elif isinstance(t, Struct):
        put_struct(out, t, v, where)
    elif isinstance(t, Map):
        _put_map(out, t, v, where)
    else:
        _put_list(out, t, v, where)


def _put_basic(out: bytearray, t: Basic, v, where: str) -> None:
    if t is BOOL and isinstance(v, bool):
        out.append(1 if v else 0)
    elif t in (INT, UINT) and isinstance(v, int) and not isinstance(v, bool):
        lo, hi = (-(1 << 63), 1 << 63) if t is INT else (0, 1 << 64)
        if not lo <= v < hi:
            raise misfit(t, v, where, "is out of range for")
        (put_int if t is INT else put_uint)(out, int(v))
    elif t is FLOAT and isinstance(v, (int, float)) and not isinstance(v, bool):
        put_float(out, float(v))
    elif t is COMPLEX and isinstance(v, (int, float, complex)) and not isinstance(v, bool):
        put_float(out, complex(v).real)
        put_float(out, complex(v).imag)
    elif t is STRING and isinstance(v, str):
        data = v.encode("utf-8", "surrogateescape")
        put_uint(out, len(data))
        out += data
    elif t is BYTES and isinstance(v, (bytes, bytearray, memoryview)):
        put_uint(out, len(v))
        out += v
    else:
        raise misfit(t, v, where)


def _omitted(t: GoType, v) -> bool:
    """Does Go leave this struct field out? (never for a struct or an array)"""
    if v is None:
        return isinstance(t, Ptr) or not isinstance(t, (Struct, Array))
    t = base(t)
    if t is BOOL:
        return v is False
    if t in (STRING, BYTES):
        return isinstance(v, (str, bytes, bytearray, memoryview)) and len(v) == 0
    if isinstance(t, Basic):
        return isinstance(v, (int, float, complex)) and not isinstance(v, bool) and v == 0
    return isinstance(t, Slice) and _is_list(v) and len(v) == 0


def put_struct(out: bytearray, t: Struct, v, where: str) -> None:
    v = {} if v is None else v
    if not isinstance(v, Mapping):
        raise misfit(t, v, where)
    unknown = set(v) - {n for n, _ in t.fields}
    if unknown:
        raise misfit(t, v, where, f"has fields {sorted(unknown)!r} not in")
    last = -1
    for i, (name, ft) in enumerate(t.fields):
        fv = v.get(name)
        if _omitted(ft, fv):
            continue
        put_uint(out, i - last)
        last = i
        put_value(out, ft, fv, f"{where}.{name}")
    out.append(0)


def _is_list(v) -> bool:
    """A slice or array value: a list, a tuple, or any other sequence that is not text
    or bytes. Elements are read one at a time as they are written, so a sequence that
    makes each element when asked keeps only one in memory (weaveDNS's gossip)."""
    return isinstance(v, (list, tuple)) or (isinstance(v, Sequence) and not isinstance(v, (str, bytes, bytearray)))


def _put_list(out: bytearray, t: Slice | Array, v, where: str) -> None:
    if v is None:
        v = [] if isinstance(t, Slice) else zero(t)
    if not _is_list(v):
        raise misfit(t, v, where)
    if isinstance(t, Array) and len(v) != t.length:
        raise misfit(t, v, where, f"has {len(v)} elements, not the length of")
    put_uint(out, len(v))
    for i, elem in enumerate(v):
        put_value(out, t.elem, elem, f"{where}[{i}]")


def _put_map(out: bytearray, t: Map, v, where: str) -> None:
    v = {} if v is None else v
    if not isinstance(v, Mapping):
        raise misfit(t, v, where)
    put_uint(out, len(v))
    for key, elem in v.items():
        put_value(out, t.key, _thaw(t.key, key), f"{where}[key {key!r}]")
        put_value(out, t.elem, elem, f"{where}[{key!r}]")


def _thaw(t: GoType, key):
    """A map key given as a tuple (as decode returns struct and array keys) -> dict/list."""
    t = base(t)
    if isinstance(t, Struct) and isinstance(key, tuple) and len(key) == len(t.fields):
        return {n: _thaw(ft, k) for (n, ft), k in zip(t.fields, key)}
    if isinstance(t, Array) and isinstance(key, tuple):
        return [_thaw(t.elem, k) for k in key]
    return key
