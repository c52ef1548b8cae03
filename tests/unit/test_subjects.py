import pytest

from shared import subjects


def test_request_subjects():
    assert subjects.request("ipam", "allocate") == "weave.ipam.allocate"
    assert subjects.health("dns") == "weave.dns.health"
    assert subjects.supervisor("ps") == "weave.supervisor.ps"


def test_event_and_mesh_subjects():
    assert subjects.event("topology") == "weave.events.topology"
    assert subjects.mesh_out("IPallocation") == "weave.mesh.IPallocation.out"
    assert subjects.mesh_in("nameserver") == "weave.mesh.nameserver.in"


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "*", ">", "x>"])
def test_bad_tokens_rejected(bad):
    with pytest.raises(ValueError):
        subjects.event(bad)
    with pytest.raises(ValueError):
        subjects.mesh_in(bad)


def test_unknown_service_rejected():
    with pytest.raises(ValueError, match="unknown service"):
        subjects.request("router", "x")


@pytest.mark.parametrize("pattern,subject,expected", [
    ("weave.ipam.allocate", "weave.ipam.allocate", True),
    ("weave.ipam.*", "weave.ipam.allocate", True),
    ("weave.*", "weave.ipam.allocate", False),
    ("weave.>", "weave.ipam.allocate", True),
    ("weave.>", "weave", False),
    ("weave.ipam.allocate", "weave.ipam", False),
    ("weave.*.health", "weave.dns.health", True),
])
def test_matches(pattern, subject, expected):
    assert subjects.matches(pattern, subject) is expected
