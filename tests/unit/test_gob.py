"""Go encoding/gob codec: golden vectors, Go's encoding rules, decoding, bounds, properties."""
from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import LocalProtocolError, RemoteProtocolError
from shared.gob import (
    BOOL, BYTES, COMPLEX, FLOAT, INT, STRING, UINT, Array, Decoder, Encoder, GobError, Map,
    NeedMoreData, Ptr, Slice, Struct, decode, decode_all, encode,
)
from shared.gob_types import Reader, put_float, put_int, put_uint, zero

H = bytes.fromhex

# --- golden vectors: weave-spec section 3 and Go's doc.go ----------------------------

SPEC_GOLDEN = [
    (STRING, "topology", "0b0c0008746f706f6c6f6779"),
    (UINT, 0x0A0B0C0D0E0F, "090600fa0a0b0c0d0e0f"),
    (BYTES, b"\x01\x02\x03", "060a0003010203"),
    (Map(STRING, STRING), {"a": "b"}, "0eff81040102ff8200010c010c000008ff82000101610162"),
    (INT, 3, "03040006"),  # doc.go: "a signed integer with value 3"
]
POINT = Struct("Point", (("X", INT), ("Y", INT)))
POINT_GOLDEN = ("1fff810301010550 6f696e7401ff8200 0102010158010400 0101590104000000"
                "07ff82012c014200").replace(" ", "")


@pytest.mark.parametrize("typ,value,hexed", SPEC_GOLDEN)
def test_golden_encode_and_decode(typ, value, hexed):
    assert encode(typ, value).hex() == hexed
    assert decode(H(hexed)) == value
    assert decode(H(hexed), typ) == value


def test_golden_point_from_go_doc():
    assert encode(POINT, {"X": 22, "Y": 33}).hex() == POINT_GOLDEN
    assert decode(H(POINT_GOLDEN)) == {"X": 22, "Y": 33}


def test_golden_gossip_envelope_is_one_stream():
    enc = Encoder()
    stream = (enc.encode(STRING, "nameserver") + enc.encode(UINT, 0x0A0B0C0D0E0F)
              + enc.encode(BYTES, b"\xaa"))
    assert stream.hex() == "0d0c000a6e616d65736572766572090600fa0a0b0c0d0e0f040a0001aa"
    assert decode_all(stream) == ["nameserver", 0x0A0B0C0D0E0F, b"\xaa"]


def test_second_value_of_a_type_reuses_the_definition():
    enc = Encoder()
    first = enc.encode(POINT, {"X": 22, "Y": 33})
    assert first.hex() == POINT_GOLDEN
    assert enc.encode(POINT, {"X": 22, "Y": 33}).hex() == "07ff82012c014200"


# --- primitives (Go doc.go tables) ----------------------------------------------------

@pytest.mark.parametrize("value,hexed", [
    (0, "00"), (7, "07"), (127, "7f"), (128, "ff80"), (256, "fe0100"),
    (0x0A0B0C0D0E0F, "fa0a0b0c0d0e0f"), (2**64 - 1, "f8ffffffffffffffff"),
])
def test_uint(value, hexed):
    out = bytearray()
    put_uint(out, value)
    assert out.hex() == hexed
    assert Reader(out, 0, len(out), 0).uint() == value


@pytest.mark.parametrize("value,hexed", [
    (0, "00"), (-1, "01"), (1, "02"), (-2, "03"), (63, "7e"), (-64, "7f"), (64, "ff80"),
    (-129, "fe0101"), (2**63 - 1, "f8fffffffffffffffe"), (-(2**63), "f8ffffffffffffffff"),
])
def test_int(value, hexed):
    out = bytearray()
    put_int(out, value)
    assert out.hex() == hexed
    assert Reader(out, 0, len(out), 0).int() == value


@pytest.mark.parametrize("value,hexed", [
    (0.0, "00"), (17.0, "fe3140"), (1.0, "fef03f"), (-0.0, "ff80"), (0.5, "fee03f"),
])
def test_float_is_byte_reversed(value, hexed):
    out = bytearray()
    put_float(out, value)
    assert out.hex() == hexed
    got = Reader(out, 0, len(out), 0).float()
    assert got == value and math.copysign(1, got) == math.copysign(1, value)


@pytest.mark.parametrize("typ,value,hexed", [
    (BOOL, True, "03020001"),
    (BOOL, False, "03020000"),
    (STRING, "", "030c0000"),
    (FLOAT, 17.0, "050800fe3140"),
    (COMPLEX, 1 + 2j, "060e00fef03f40"),
    (Slice(UINT), [1, 0, 300], "0cff81020102ff820001060000" "09ff8200030100fe012c"),
])
def test_top_level_singletons(typ, value, hexed):
    assert encode(typ, value).hex() == hexed
    assert decode(H(hexed), typ) == value and decode(H(hexed)) == value


# --- Go's struct rules ---------------------------------------------------------------

INNER = Struct("Inner", (("A", INT),))
OUTER = Struct("Outer", (
    ("B", BOOL), ("I", INT), ("U", UINT), ("F", FLOAT), ("S", STRING), ("Y", BYTES),
    ("L", Slice(INT)), ("M", Map(STRING, INT)), ("P", Ptr(INNER)), ("N", INNER),
    ("R", Array(BOOL, 2)),
))


@pytest.mark.parametrize("value,body", [
    # zero values are omitted, but a non-pointer struct and an array are always sent
    ({}, "0a00 01020000 00"),
    ({"B": True, "I": -1, "U": 1, "S": "x", "Y": b"\x00"},
     "0101 0101 0101 020178 010100 0400 01020000 00"),
    ({"L": [], "M": None, "P": None}, "0a00 01020000 00"),
    ({"M": {}}, "0800 0200 01020000 00"),  # an empty non-nil map is sent
    ({"P": {"A": 0}}, "0900 0100 01020000 00"),  # a non-nil pointer to a zero struct
    ({"N": {"A": 5}, "R": [True, False]}, "0a010a00 01020100 00"),
    ({"I": 5, "M": {}, "P": {"A": 0}}, "020a 0600 0100 0100 01020000 00"),
    ({"F": 0.5, "L": [0, -1]}, "04fee03f 03020001 0300 01020000 00"),
])
def test_struct_field_omission(value, body):
    data = encode(OUTER, value)
    assert _last_message(data).hex() == "ff82" + body.replace(" ", "")
    decoded = decode(data, OUTER)
    for name, field_value in value.items():
        assert decoded[name] == field_value


def _last_message(data: bytes) -> bytes:
    pos, last = 0, b""
    while pos < len(data):
        r = Reader(data, pos, len(data), 0)
        n = r.uint()
        last = data[r.pos:r.pos + n]
        pos = r.pos + n
    return last


def test_type_ids_follow_go_order():
    """Struct before its fields; slice/array/map after their parts; sent depth first."""
    data = encode(OUTER, {})
    dec = Decoder(data)
    dec.decode()
    wires = dec.wire_types
    assert sorted(wires) == [65, 66, 67, 68, 69]
    assert wires[65].name == "Outer" and wires[68].name == "Inner"
    assert wires[66].kind == "slice" and wires[66].elem == 2
    assert wires[67].kind == "map" and (wires[67].key, wires[67].elem) == (6, 2)
    assert wires[69].kind == "array" and wires[69].length == 2
    assert [f[1] for f in wires[65].fields] == [1, 2, 3, 4, 6, 5, 66, 67, 68, 68, 69]
    assert _definition_order(data) == [65, 66, 67, 68, 69]


def _definition_order(data: bytes) -> list[int]:
    order, pos = [], 0
    while pos < len(data):
        r = Reader(data, pos, len(data), 0)
        n = r.uint()
        start = r.pos
        tid = r.int()
        if tid < 0:
            order.append(-tid)
        pos = start + n
    return order


def test_slice_of_structs_gets_element_id_first():
    a = Struct("A", (("S", Slice(POINT, name="[]main.Point")),))
    data = encode(a, {"S": [{"X": 1, "Y": 0}]})
    assert _definition_order(data) == [65, 67, 66]
    assert decode(data) == {"S": [{"X": 1, "Y": 0}]}
    assert H("0c5b5d6d61696e2e506f696e74") in data  # the slice's Go name is on the wire


def test_preset_ids_reproduce_a_running_go_process():
    enc = Encoder(ids={POINT: 90}, next_id=100)
    a = Struct("A", (("P", POINT), ("L", Slice(INT))))
    data = enc.encode(a, {"P": {"X": 1}})
    assert _definition_order(data) == [100, 90, 101]
    assert decode(data, a) == {"P": {"X": 1, "Y": 0}, "L": []}


def test_map_with_struct_key_decodes_to_tuples():
    node = Struct("", (("Name", UINT), ("UID", UINT)))
    typ = Map(node, STRING, name="GossipState")
    value = {(1, 2): "a", (3, 0): "b"}
    data = encode(typ, value)
    assert decode(data) == value
    assert decode(data, typ) == value
    assert encode(typ, {(1, 2): "a", (3, 0): "b"}) == data
    assert decode(encode(Map(Array(INT, 2), BOOL), {(1, 2): True})) == {(1, 2): True}


# --- decoding with and without a type -------------------------------------------------

WIDE = Struct("Wide", (("A", INT), ("B", STRING), ("C", Slice(UINT)), ("D", Ptr(POINT))))
NARROW = Struct("Other", (("B", STRING), ("Z", Map(STRING, BOOL)), ("A", INT)))


def test_typed_decode_matches_fields_by_name_and_skips_unknown():
    data = encode(WIDE, {"A": 7, "C": [1, 2], "D": {"X": 1, "Y": 2}})
    assert decode(data, NARROW) == {"B": "", "Z": None, "A": 7}
    assert decode(data) == {"A": 7, "B": "", "C": [1, 2], "D": {"X": 1, "Y": 2}}


def test_untyped_decode_fills_omitted_fields():
    assert decode(encode(WIDE, {})) == {"A": 0, "B": "", "C": [], "D": None}
    assert decode(encode(WIDE, {}), WIDE) == {"A": 0, "B": "", "C": [], "D": None}
    assert decode(encode(OUTER, {}), OUTER)["N"] == {"A": 0}


def test_make_turns_each_struct_of_that_type_into_a_value_as_it_is_read():
    points = Struct("Points", (("P", Slice(POINT)), ("Q", POINT)))
    data = encode(points, {"P": [{"X": 1, "Y": 2}, {"X": 3}], "Q": {"Y": 9}})
    made = []

    def make(d):
        made.append(dict(d))
        return (d["X"], d["Y"])
    assert decode(data, points, make={POINT: make}) == {"P": [(1, 2), (3, 0)], "Q": (0, 9)}
    assert made == [{"X": 1, "Y": 2}, {"X": 3, "Y": 0}, {"X": 0, "Y": 9}]
    # an equal struct type that is another object is not converted (identity decides)
    twin = Struct("Point", (("X", INT), ("Y", INT)))
    assert decode(data, points, make={twin: make})["Q"] == {"X": 0, "Y": 9}


def test_make_errors_propagate():
    def refuse(d):
        raise RemoteProtocolError("no", code="bad_point")
    with pytest.raises(RemoteProtocolError, match="no"):
        decode(encode(POINT, {"X": 1}), POINT, make={POINT: refuse})


class _Point(dict):
    """A point dict that can be watched for its end (weakref)."""


class _Lazy(Sequence):
    """A sequence that makes each element when asked, and notes how many of the
    elements it made were still alive each time it was asked for another."""

    def __init__(self, n: int) -> None:
        self.n, self.alive, self.alive_when_asked = n, 0, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.alive_when_asked.append(self.alive)
        point = _Point(X=i, Y=-i)
        self.alive += 1
        weakref.finalize(point, self._gone)
        return point

    def _gone(self) -> None:
        self.alive -= 1


def test_a_slice_may_be_any_sequence_read_one_element_at_a_time():
    lazy = _Lazy(50)
    assert encode(Slice(POINT), lazy) == encode(Slice(POINT), [{"X": i, "Y": -i} for i in range(50)])
    # at most the element just written is alive when the next is asked for (a copy of
    # the sequence made first would hold them all: 0, 1, 2, ... 49)
    assert max(lazy.alive_when_asked) <= 1, lazy.alive_when_asked
    assert len(lazy.alive_when_asked) == 50
    assert encode(Struct("S", (("A", Slice(INT)),)), {"A": range(0)}) == encode(Struct("S", (("A", Slice(INT)),)), {})
    with pytest.raises(LocalProtocolError):
        encode(Slice(INT), "123")  # text is not a slice
    with pytest.raises(LocalProtocolError):
        encode(Slice(INT), b"123")


@pytest.mark.parametrize("typ,value,local", [
    (INT, 1, UINT), (UINT, 1, INT), (STRING, "x", BYTES), (Slice(INT), [1], Slice(UINT)),
    (Array(INT, 2), [1, 2], Array(INT, 3)), (POINT, {"X": 1}, INT), (INT, 1, POINT),
    (Map(STRING, INT), {"a": 1}, Map(STRING, STRING)),
])
def test_incompatible_local_type_is_gob_error(typ, value, local):
    with pytest.raises(GobError, match="does not fit"):
        decode(encode(typ, value), local)


def test_strings_are_bytes_with_surrogateescape():
    raw = "caf\udce9"  # the Latin-1 byte 0xe9, not valid UTF-8
    data = encode(STRING, raw)
    assert data.endswith(b"caf\xe9")
    assert decode(data) == raw


# --- incremental decoding -------------------------------------------------------------

def test_decoder_incremental_needs_more_data_and_resumes():
    enc = Encoder()
    stream = enc.encode(POINT, {"X": 1, "Y": 2}) + enc.encode(POINT, {"X": 3})
    dec = Decoder()
    got = []
    for i in range(len(stream)):
        dec.feed(stream[i:i + 1])
        try:
            got.append(dec.decode(POINT))
        except NeedMoreData:
            pass
    assert got == [{"X": 1, "Y": 2}, {"X": 3, "Y": 0}]
    assert dec.at_eof()
    with pytest.raises(NeedMoreData):
        dec.decode()


def test_need_more_data_is_not_a_gob_error():
    assert not issubclass(NeedMoreData, GobError)
    assert issubclass(GobError, RemoteProtocolError)


# --- malformed input ------------------------------------------------------------------

@pytest.mark.parametrize("hexed,reason", [
    ("", "truncated"),
    ("0b0c0008746f706f6c6f67", "truncated"),
    ("0b0c0008746f706f6c6f677979", "trailing"),
    ("00", "message length"),
    ("fc7fffffff", "message length"),  # 2 GiB
    ("80", "invalid uint"),
    ("03040106", "non-zero field delta"),
    ("0404000600", "unread bytes"),
    ("040c0009616263", "need 9 bytes"),
    ("030400ff", "need 1 bytes"),
    ("03ff8600", "undefined"),  # value of a type never defined
    ("02200a", "field number"),  # a wireType value with field 10
    ("03ff8100", "no single kind"),
    ("0e ff81040102ff8200010c010c0000 0eff81040102ff8200010c010c0000", "duplicate"),
    ("0d 0d040102ff8200010c010c0000", "reserved"),
    ("0e ff81040102ff8200010c010c0000 07ff8200 7f 610162", "count"),
    (POINT_GOLDEN[:64] + "04ff820300", "field number 2 beyond"),
    ("0310000102", "interface values"),
])
def test_malformed_streams_raise_gob_error_with_offset(hexed, reason):
    data = H(hexed.replace(" ", ""))
    with pytest.raises(GobError, match=reason) as info:
        decode(data)
    assert 0 <= info.value.offset <= len(data)
    assert "offset" in str(info.value)


def test_decoder_stays_failed_after_an_error():
    dec = Decoder(H("03040106") + encode(INT, 1))
    with pytest.raises(GobError) as first:
        dec.decode()
    with pytest.raises(GobError) as again:
        dec.decode()
    assert again.value is first.value


def test_type_definitions_without_value_are_truncated():
    definitions = encode(POINT, {"X": 1})[:-8]
    with pytest.raises(GobError, match="truncated"):
        decode_all(definitions)


def test_deep_nesting_is_bounded():
    # type 65 = []T65, a slice of itself; the value nests 200 levels: [[[...[]...]]]
    definition = H("0dff81020102ff820001ff820000")
    value = H("ffcc") + H("ff8200") + b"\x01" * 200 + b"\x00"
    with pytest.raises(GobError, match="nested deeper"):
        decode(definition + value)
    shallow = H("ff82") + H("00") + b"\x01" * 3 + b"\x00"
    assert decode(definition + bytes([len(shallow)]) + shallow) == [[[[]]]]


# --- encoder misuse -------------------------------------------------------------------

@pytest.mark.parametrize("typ,value", [
    (UINT, -1), (UINT, 2**64), (INT, 2**63), (INT, True), (STRING, b"x"), (BYTES, "x"),
    (BOOL, 1), (POINT, {"X": 1, "Q": 2}), (POINT, [1, 2]), (Array(INT, 2), [1]),
    (Slice(Ptr(INT)), [None]), (Ptr(INT), None), (Map(STRING, INT), [("a", 1)]),
])
def test_encoding_misfit_is_local_protocol_error(typ, value):
    with pytest.raises(LocalProtocolError):
        encode(typ, value)


def test_encoder_stays_usable_after_a_misfit():
    enc = Encoder()
    with pytest.raises(LocalProtocolError):
        enc.encode(POINT, {"X": "no"})
    assert enc.encode(POINT, {"X": 22, "Y": 33}).hex() == POINT_GOLDEN


# --- properties -----------------------------------------------------------------------

BASIC_VALUES = {
    BOOL: st.booleans(),
    INT: st.integers(-(2**63), 2**63 - 1),
    UINT: st.integers(0, 2**64 - 1),
    FLOAT: st.floats(allow_nan=False),
    STRING: st.text(max_size=8),
    BYTES: st.binary(max_size=8),
}
KEY_TYPES = st.sampled_from([INT, UINT, STRING, BOOL])
FIELD_NAMES = st.sampled_from(["A", "B", "C", "Name", "UID", "Version", "Entries"])


def _types():
    leaf = st.sampled_from(list(BASIC_VALUES))
    return st.recursive(leaf, lambda inner: st.one_of(
        inner.map(Slice),
        st.builds(Array, inner, st.integers(0, 3)),
        st.builds(Map, KEY_TYPES, inner),
        inner.map(Ptr),
        st.lists(st.tuples(FIELD_NAMES, inner), max_size=4, unique_by=lambda f: f[0])
        .map(lambda fs: Struct("S", tuple(fs))),
    ), max_leaves=6)


def _values(t, *, in_container=False):
    if t in BASIC_VALUES:
        return BASIC_VALUES[t]
    if isinstance(t, Slice):
        return st.lists(_values(t.elem, in_container=True), max_size=3)
    if isinstance(t, Array):
        return st.lists(_values(t.elem, in_container=True), min_size=t.length, max_size=t.length)
    if isinstance(t, Map):
        return st.dictionaries(_values(t.key), _values(t.elem, in_container=True), max_size=3)
    if isinstance(t, Ptr):
        inner = _values(t.elem, in_container=in_container)
        return inner if in_container else st.one_of(st.none(), inner)
    return st.fixed_dictionaries({n: _values(ft) for n, ft in t.fields})


def _normal(t, v):
    """What decoding yields for v: pointers flattened, zero pointee fields dropped."""
    if isinstance(t, Ptr):
        return None if v is None else _normal(t.elem, v)
    if isinstance(t, (Slice, Array)):
        return [_normal(t.elem, x) for x in v]
    if isinstance(t, Map):
        return {k: _normal(t.elem, x) for k, x in v.items()}
    if isinstance(t, Struct):
        return {n: _field_normal(ft, v[n]) for n, ft in t.fields}
    return v


def _field_normal(t, v):
    """A pointer field to a zero basic value or an empty slice is omitted, so it reads nil."""
    b = _base(t)
    if isinstance(t, Ptr) and v is not None and not isinstance(b, (Struct, Array, Map)):
        if (isinstance(b, Slice) and v == []) or (not isinstance(b, Slice) and v == zero(b)):
            return None
    return _normal(t, v)


def _base(t):
    while isinstance(t, Ptr):
        t = t.elem
    return t


@st.composite
def typed_values(draw):
    t = draw(_types())
    top = _base(t)
    v = draw(_values(top, in_container=True))
    return top, v


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_values())
def test_roundtrip_encode_decode(tv):
    t, v = tv
    data = encode(t, v)
    assert decode(data, t) == _normal(t, v)
    assert encode(t, decode(data, t)) == data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_values(), typed_values())
def test_roundtrip_stream_of_values(a, b):
    enc = Encoder()
    stream = enc.encode(*a) + enc.encode(*b) + enc.encode(*a)
    dec = Decoder(stream)
    assert [dec.decode(t) for t, _ in (a, b, a)] == [_normal(*a), _normal(*b), _normal(*a)]
    assert dec.at_eof()
    assert len(decode_all(stream)) == 3


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_gob_error(data):
    try:
        decode_all(data)
    except GobError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_values(), st.data())
def test_mutated_streams_only_raise_gob_error(tv, data):
    t, v = tv
    raw = bytearray(encode(t, v))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 4))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
    for typ in (None, t):
        try:
            decode_all(bytes(raw), typ)
        except GobError:
            pass


def test_zero_filling_is_bounded():
    """Cheap wire bytes must not expand without bound: a 1-byte struct value may stand for
    many zero fields, so zero-filled fields per message are budgeted (16 per byte + 64 Ki)."""
    wide = Struct("W", tuple((f"F{i}", BOOL) for i in range(300)))
    data = encode(Slice(wide), [{}] * 5000)  # 1.5 M zero fields from ~5 KB
    for typ in (None, Slice(wide)):
        with pytest.raises(GobError, match="too many zero values"):
            decode(data, typ)
    small = encode(Slice(wide), [{}] * 100)
    assert decode(small) == [{f"F{i}": False for i in range(300)}] * 100


def test_gob_encoder_values_decode_as_bytes():
    # type 65 defined as a GobEncoderT named "T"; the value is its opaque bytes "abc"
    stream = H("0dff81050101015401ff82000000") + H("07ff820003616263")
    assert decode(stream) == b"abc"
    assert decode(stream, BYTES) == b"abc"
    with pytest.raises(GobError, match="does not fit"):
        decode(stream, STRING)


def test_long_stream_fed_in_chunks_keeps_absolute_offsets():
    enc = Encoder()
    stream = b"".join(enc.encode(STRING, f"{i:0100d}") for i in range(2000))
    dec = Decoder()
    got = []
    for start in range(0, len(stream), 1000):
        dec.feed(stream[start:start + 1000])
        while True:
            try:
                got.append(dec.decode(STRING))
            except NeedMoreData:
                break
    assert got == [f"{i:0100d}" for i in range(2000)]
    assert dec.offset == len(stream)
    dec.feed(H("80"))
    with pytest.raises(GobError) as info:
        dec.decode()
    assert info.value.offset == len(stream) + 1


def test_struct_descriptor_rejects_duplicate_fields():
    with pytest.raises(LocalProtocolError):
        Struct("Bad", (("A", INT), ("A", UINT)))
