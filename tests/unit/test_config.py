from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import SETTINGS, LaunchConfig, for_service


def test_every_service_has_settings_for_both_profiles(tmp_path):
    for service, cls in SETTINGS.items():
        prod = for_service(service, LaunchConfig(state_dir=tmp_path)).settings
        test = for_service(service, LaunchConfig(state_dir=tmp_path, profile="test")).settings
        assert isinstance(prod, cls) and isinstance(test, cls)
        for field in cls.TEST:
            assert getattr(test, field) < getattr(prod, field), f"{service}.{field} is not shorter in test"


def test_weave_defaults_in_production(tmp_path):
    gossip = for_service("gossip", LaunchConfig(state_dir=tmp_path)).settings
    assert gossip.gossip_interval_s == 30.0 and gossip.heartbeat_s == 30.0


def test_launch_config_round_trips_and_is_private(tmp_path):
    cfg = LaunchConfig(state_dir=tmp_path, password="pw", peers=("10.0.0.1",))
    path = cfg.save()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert LaunchConfig.load(tmp_path) == cfg


def test_launch_config_rejects_unknown_options(tmp_path):
    with pytest.raises(ValidationError):
        LaunchConfig(state_dir=tmp_path, datapath="warp")
    with pytest.raises(ValidationError):
        LaunchConfig(state_dir=Path("/x"), colour="red")


def test_metrics_port_override(tmp_path, monkeypatch):
    monkeypatch.setenv("WEAVE_DNS_METRICS_PORT", "0")
    assert for_service("dns", LaunchConfig(state_dir=tmp_path)).metrics_port == 0


def test_no_dns_and_no_npc_leave_those_services_out(tmp_path):
    from weavectl.supervisor import services_for

    everything = services_for(LaunchConfig(state_dir=tmp_path))
    assert {"dns", "npc", "gossip", "ipam", "datapath"} <= set(everything)
    assert services_for(LaunchConfig(state_dir=tmp_path, no_npc=True)) == [s for s in everything if s != "npc"]
    assert services_for(LaunchConfig(state_dir=tmp_path, no_dns=True, no_npc=True)) == [
        s for s in everything if s not in ("dns", "npc")]
