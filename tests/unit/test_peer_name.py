import pytest

from shared.weave.peer_name import PeerName, ShortID


@pytest.mark.parametrize(
    "text,value",
    [
        ("aa:00:00:00:00:01", 0xAA0000000001),
        ("::1", 1),
        ("::2", 2),
        ("aa::1", 0xAA0000000001),
        ("0a:0b:0c:0d:0e:0f", 0x0A0B0C0D0E0F),
        ("FF:ff:ff:ff:ff:ff", 0xFFFFFFFFFFFF),
    ],
)
def test_parse(text, value):
    assert PeerName.parse(text) == value


@pytest.mark.parametrize("bad", ["", "aa", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "::1::", "xx::1", "aaa::1"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError):
        PeerName.parse(bad)


def test_str_and_bytes_roundtrip():
    name = PeerName(186916976721921)
    assert str(name) == "aa:00:00:00:00:01"
    assert name.to_bytes6() == bytes.fromhex("aa0000000001")
    assert PeerName.from_bytes6(name.to_bytes6()) == name


def test_short_id_range():
    assert ShortID(4095) == 4095
    with pytest.raises(Exception):
        ShortID(4096)


def test_of_takes_a_peer_name_a_number_or_text():
    p = PeerName.parse("aa:00:00:00:00:01")
    assert PeerName.of(p) is p
    assert PeerName.of(0xAA0000000001) == PeerName.of("AA:00:00:00:00:01") == PeerName.of("aa:00:00:00:00:01") == p
    assert PeerName.of("::1") == PeerName(1) and type(PeerName.of("aa:00:00:00:00:01")) is PeerName
    for bad in ("+a:00:00:00:00:01", " a:00:00:00:00:01", "aa:00:00:00:00:01\n", "zz", 1 << 48, -1, True, None, 1.0):
        with pytest.raises(ValueError):
            PeerName.of(bad)


def test_formatted_as_the_mac_form_unless_a_number_is_asked_for():
    p = PeerName.parse("aa:00:00:00:00:01")
    assert (f"{p}", f"{p:<18}|", "%s" % p) == ("aa:00:00:00:00:01", "aa:00:00:00:00:01 |", "aa:00:00:00:00:01")
    assert (f"{p:x}", f"{p:d}") == ("aa0000000001", str(0xAA0000000001))
