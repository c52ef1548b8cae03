"""Go `encoding/gob`, as Weave speaks it: bytes that a Go decoder accepts, and decoding of
whatever a Go encoder writes (sans-I/O; no clocks, no sockets).

A gob stream is a sequence of messages: uint length, then a signed type id. A negative
id -n carries the definition of type n (Go's wireType); a positive id is followed by a
value. Type definitions come once per stream, before the first value that needs them.
Top-level non-struct values start with a 0 byte (Go's "singleton" field delta). Struct
fields are numbered by delta from the previous field, zero values omitted, 0 ends the
struct. Type descriptors and the Python value mapping are in `shared.gob_types`.

Go facts honoured exactly (encode.go, type.go of Go 1.19):
- a field is omitted when it is false / 0 / "" / empty []byte / empty slice / nil map /
  nil pointer; a non-pointer struct or array field is always sent, and so is an empty
  non-nil map (`{}`). Slice and map elements are always sent, zero or not.
- user type ids start at 65 per Encoder; a struct takes its id before its fields' types,
  a slice or array after its element type, a map after its key and element types.
  Definitions are sent outer type first, then the parts in field order, depth first.
- maps are written in the dict's iteration order (Go's own order is random).
Decoding never trusts a count, length or id from the stream: everything is bounded by
the bytes actually present, MAX_MESSAGE and MAX_DEPTH, and failures are GobError.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache

from shared.gob_types import (  # noqa: F401  (re-exported public names)
    BASICS, BOOL, BUILTIN_WIRES, BYTES, COMPLEX, FIRST_REMOTE_ID, FIRST_USER_ID, FLOAT, INT,
    INTERFACE_ID, MAX_DEPTH, MAX_MESSAGE, STRING, UINT, WIRE_TYPE, WIRE_TYPE_ID, Array, Basic,
    GobError, GoType, Map, NeedMoreData, Ptr, Reader, Slice, Struct, Wire, base, misfit,
    put_int, put_struct, put_uint, put_value, to_wire, wire_from_value, wire_to_value, zero,
)

MAX_ZERO_FILL = 1 << 22  # zero values made up per message for omitted fields


def encode(typ: GoType, value) -> bytes:
    """What Go's `gob.NewEncoder(w).Encode(v)` writes: type definitions, then the value."""
    return Encoder().encode(typ, value)


def decode(data: bytes, typ: GoType | None = None, make: Mapping[Struct, Callable[[dict], object]] | None = None):
    """Exactly one value from a fresh stream; GobError if truncated or followed by more.
    `make`: for these struct types of `typ` (the same objects), what each decoded struct
    becomes, called as soon as it is read (see Decoder)."""
    dec = Decoder(data, make)
    value = _complete(dec, typ, len(data))
    if not dec.at_eof():
        raise GobError("trailing bytes after the value", offset=dec.offset)
    return value


def decode_all(data: bytes, typ: GoType | None = None) -> list:
    """Every value of a fresh stream, in order, until its end (each decoded with `typ`)."""
    dec = Decoder(data)
    values = []
    while not dec.at_eof():
        values.append(_complete(dec, typ, len(data)))
    return values


def _complete(dec: "Decoder", typ: GoType | None, end: int):
    try:
        return dec.decode(typ)
    except NeedMoreData:
        raise GobError("stream truncated", offset=end) from None


# --- encoding ---------------------------------------------------------------------

class Encoder:
    """One outgoing gob stream: each type definition is written once per stream.

    Type ids are what a fresh Go process would give. A real Go process numbers types
    process-wide, in the order it first meets them; `ids` (types already numbered) and
    `next_id` reproduce such a process exactly, e.g. to replay captured bytes. Go's
    decoder accepts any ids, so peers never need this.
    """

    def __init__(self, ids: Mapping[GoType, int] | None = None,
                 next_id: int = FIRST_USER_ID) -> None:
        self._ids: dict[GoType, int] = {base(t): i for t, i in (ids or {}).items()}
        self._next_id = next_id
        self._sent: set[GoType] = set()

    def encode(self, typ: GoType, value) -> bytes:
        """The bytes to append to this stream for `value` (any new definitions first).

        Raises LocalProtocolError if `value` does not fit `typ`; the stream stays usable.
        """
        t = base(typ)
        if value is None and isinstance(typ, Ptr):
            raise misfit(typ, value, "value", "cannot encode a nil pointer")
        fresh = not self._sent and not self._ids and self._next_id == FIRST_USER_ID
        cached = _FRESH_DEFS.get(t) if fresh else None
        if cached is not None:  # a new stream's definitions for `t` never change: reuse them
            ids, self._next_id, sent, defs = cached
            self._ids = dict(ids)
        else:
            self._assign(t)
        body = bytearray()
        put_int(body, t.id if isinstance(t, Basic) else self._ids[t])
        if isinstance(t, Struct):
            put_struct(body, t, value, t.name or "value")
        else:
            body.append(0)  # singleton: there is no surrounding struct to number a field
            put_value(body, t, value, "value")
        if cached is not None:
            self._sent = set(sent)
            out = bytearray(defs)
        else:
            out = bytearray()
            self._send_type(out, t)
            if fresh:
                _FRESH_DEFS[t] = (dict(self._ids), self._next_id, frozenset(self._sent), bytes(out))
        put_uint(out, len(body))
        return b"".join((out, body))  # (the value copied once: a long slice's body is most of it)

    def _assign(self, t: GoType) -> None:
        t = base(t)
        if isinstance(t, Basic) or t in self._ids:
            return
        if isinstance(t, Struct):
            self._ids[t] = self._take_id()
            for _, ft in t.fields:
                self._assign(ft)
            return
        for part in _parts(t):
            self._assign(part)
        self._ids[t] = self._take_id()

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _send_type(self, out: bytearray, t: GoType) -> None:
        t = base(t)
        if isinstance(t, Basic) or t in self._sent:
            return
        self._sent.add(t)
        body = bytearray()
        put_int(body, -self._ids[t])
        put_struct(body, WIRE_TYPE, wire_to_value(to_wire(t, self._ids), self._ids[t]), "wireType")
        _message(out, body)
        for part in _parts(t):
            self._send_type(out, part)


_FRESH_DEFS: dict = {}
"""Root type -> (ids, next id, types sent, definition bytes) of a fresh Encoder after its
first message of that type: the one-message streams of gossip skip rebuilding them."""


def _parts(t: GoType) -> tuple[GoType, ...]:
    if isinstance(t, Struct):
        return tuple(ft for _, ft in t.fields)
    if isinstance(t, Map):
        return (t.key, t.elem)
    return (t.elem,)


def _message(out: bytearray, body: bytearray) -> None:
    put_uint(out, len(body))
    out += body


# --- decoding ---------------------------------------------------------------------

_READ = {
    1: lambda r: r.uint() != 0,
    2: Reader.int,
    3: Reader.uint,
    4: Reader.float,
    5: lambda r: r.take(r.uint()),
    6: lambda r: r.take(r.uint()).decode("utf-8", "surrogateescape"),
    7: lambda r: complex(r.float(), r.float()),
}
_KIND_TYPES = {"struct": Struct, "slice": Slice, "array": Array, "map": Map, "gobencoder": Basic}


class Decoder:
    """One incoming gob stream, fed incrementally; remembers the stream's type definitions.

    `decode(typ)` returns the next value. With `typ`, the value is shaped by it: structs
    get every declared field (zero when omitted), wire fields unknown to `typ` are
    skipped, and an incompatible wire type is a GobError. Without `typ` the shape comes
    from the wire: omitted struct fields are zero, except struct, array and map fields,
    which are None (Go only omits those when they are nil pointers or nil maps). Map
    keys that are structs or arrays become tuples (field order of `typ` or the wire).
    After a GobError the stream is unusable and every later call raises it again.

    `make` maps struct types of `typ` (compared by identity) to a function called with
    each such struct's dict as soon as it is decoded; its result takes the dict's place.
    A long slice of structs then never holds all its dicts at once (weaveDNS's periodic
    gossip carries every entry of the cluster). An exception it raises propagates.
    """

    def __init__(self, data: bytes = b"", make: Mapping[Struct, Callable[[dict], object]] | None = None) -> None:
        self._make = {id(t): fn for t, fn in (make or {}).items()}
        self._make_types = tuple(make or ())  # (alive while their ids are keys)
        self._buf = bytearray(data)
        self._pos = 0
        self._origin = 0  # stream offset of _buf[0]
        self._wires: dict[int, Wire] = dict(BUILTIN_WIRES)
        self._failed: GobError | None = None
        self._budget = 0

    @property
    def offset(self) -> int:
        """Stream offset of the next unread byte."""
        return self._origin + self._pos

    @property
    def wire_types(self) -> dict[int, Wire]:
        """The type definitions this stream has carried so far, by type id."""
        return {i: w for i, w in self._wires.items() if i >= FIRST_REMOTE_ID}

    def feed(self, data: bytes) -> None:
        if self._pos > 1 << 16:
            del self._buf[:self._pos]
            self._origin += self._pos
            self._pos = 0
        self._buf += data

    def at_eof(self) -> bool:
        """True when every byte fed so far has been consumed."""
        return self._pos == len(self._buf)

    def decode(self, typ: GoType | None = None):
        """Next value. Raises NeedMoreData (consuming nothing of the incomplete message)."""
        if self._failed is not None:
            raise self._failed
        try:
            while True:
                r = self._next_message()
                type_id = r.int()
                if type_id >= 0:
                    return self._finish(r, self._top(r, type_id, typ))
                self._finish(r, self._define(r, -type_id))
        except GobError as e:
            self._failed = e
            raise

    def _next_message(self) -> Reader:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            raise NeedMoreData()
        head = Reader(buf, pos, len(buf), self._origin)
        size_len = 1 if buf[pos] < 0x80 else 1 + (256 - buf[pos])
        if size_len <= 9 and len(buf) - pos < size_len:
            raise NeedMoreData()
        n = head.uint()
        if not 0 < n <= MAX_MESSAGE:
            raise GobError(f"message length {n} outside 1..{MAX_MESSAGE}", offset=self.offset)
        if len(buf) - head.pos < n:
            raise NeedMoreData()
        self._pos = head.pos + n
        self._budget = min(16 * n + (1 << 16), MAX_ZERO_FILL)
        return Reader(buf, head.pos, head.pos + n, self._origin)

    def _finish(self, r: Reader, value):
        if r.remaining():
            raise r.error(f"{r.remaining()} unread bytes at end of message")
        return value

    def _define(self, r: Reader, type_id: int) -> None:
        if type_id < FIRST_REMOTE_ID or type_id in self._wires:
            raise r.error(f"definition of reserved or duplicate type id {type_id}")
        wire = wire_from_value(self._struct(r, self._wires[WIRE_TYPE_ID], WIRE_TYPE, 0))
        if wire is None:
            raise r.error(f"definition of type id {type_id} has no single kind")
        if wire.kind == "array" and not 0 <= wire.length <= MAX_MESSAGE:
            raise r.error(f"array length {wire.length} out of range")
        self._wires[type_id] = wire

    def _top(self, r: Reader, type_id: int, typ: GoType | None):
        wire = self._wires.get(type_id)
        if wire is None or wire.kind != "struct":
            if r.uint() != 0:
                raise r.error("non-zero field delta for a singleton value")
        return self._value(r, type_id, typ, 0)

    def _wire(self, r: Reader, type_id: int) -> Wire:
        wire = self._wires.get(type_id)
        if wire is None:
            what = "interface values are" if type_id == INTERFACE_ID else f"type id {type_id} is"
            raise r.error(f"{what} not supported or undefined")
        return wire

    def _value(self, r: Reader, type_id: int, typ: GoType | None, depth: int):
        if depth > MAX_DEPTH:
            raise r.error(f"values nested deeper than {MAX_DEPTH}")
        local = None if typ is None else base(typ)
        if type_id in BASICS:
            if local is not None and local != BASICS[type_id]:
                raise self._mismatch(r, BASICS[type_id].name, local)
            return _READ[type_id](r)
        wire = self._wire(r, type_id)
        if local is not None and not (isinstance(local, _KIND_TYPES[wire.kind])
                                      and (wire.kind != "gobencoder" or local == BYTES)):
            raise self._mismatch(r, wire.name or wire.kind, local)
        return getattr(self, "_" + wire.kind)(r, wire, local, depth)

    def _mismatch(self, r: Reader, remote: str, local: GoType) -> GobError:
        return r.error(f"remote type {remote!r} does not fit local type {local!r}")

    def _struct(self, r: Reader, wire: Wire, local: Struct | None, depth: int) -> dict:
        if local is None:
            self._charge(r, len(wire.fields))
            out = {name: self._zero(r, fid) for name, fid in wire.fields}
            declared = {}
        else:
            self._charge(r, _zero_cost(local))
            out = zero(local)
            declared = dict(local.fields)
        num = -1
        while (delta := r.uint()) != 0:
            num += delta
            if num >= len(wire.fields):
                raise r.error(f"field number {num} beyond the {len(wire.fields)} of {wire.name!r}")
            name, fid = wire.fields[num]
            field_type = None if local is None else declared.get(name)
            value = self._value(r, fid, field_type, depth + 1)
            if local is None or name in declared:
                out[name] = value
        make = self._make.get(id(local)) if self._make else None
        return out if make is None else make(out)

    def _slice(self, r: Reader, wire: Wire, local: Slice | None, depth: int) -> list:
        elem = None if local is None else local.elem
        return [self._value(r, wire.elem, elem, depth + 1) for _ in range(r.count())]

    def _array(self, r: Reader, wire: Wire, local: Array | None, depth: int) -> list:
        if local is not None and local.length != wire.length:
            raise self._mismatch(r, f"[{wire.length}]", local)
        n = r.count()
        if n != wire.length:
            raise r.error(f"array of {n} elements, its type says {wire.length}")
        elem = None if local is None else local.elem
        return [self._value(r, wire.elem, elem, depth + 1) for _ in range(n)]

    def _map(self, r: Reader, wire: Wire, local: Map | None, depth: int) -> dict:
        key_t, elem_t = (None, None) if local is None else (local.key, local.elem)
        out = {}
        for _ in range(r.count()):
            key = _freeze(r, self._value(r, wire.key, key_t, depth + 1))
            out[key] = self._value(r, wire.elem, elem_t, depth + 1)
        return out

    def _gobencoder(self, r: Reader, wire: Wire, local, depth: int) -> bytes:
        return r.take(r.uint())

    def _zero(self, r: Reader, type_id: int):
        if type_id in BASICS:
            return zero(BASICS[type_id])
        if type_id == INTERFACE_ID:
            return None
        kind = self._wire(r, type_id).kind
        return [] if kind == "slice" else b"" if kind == "gobencoder" else None

    def _charge(self, r: Reader, n: int) -> None:
        self._budget -= n
        if self._budget < 0:
            raise r.error("too many zero values for omitted fields in one message")


def _freeze(r: Reader, key):
    """Struct and array keys as tuples, so they can key a dict."""
    if isinstance(key, dict):
        key = tuple(_freeze(r, v) for v in key.values())
    elif isinstance(key, list):
        key = tuple(_freeze(r, v) for v in key)
    try:
        hash(key)
    except TypeError:
        raise r.error(f"unhashable map key {key!r}") from None
    return key


@lru_cache(maxsize=256)
def _zero_cost(t: GoType) -> int:
    t = base(t)
    if isinstance(t, Struct):
        return 1 + sum(_zero_cost(ft) for _, ft in t.fields)
    if isinstance(t, Array):
        return 1 + t.length * _zero_cost(t.elem)
    return 1
