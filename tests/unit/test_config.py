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


def test_no_scope_leaves_the_scope_pair_out_and_modules_are_mapped(tmp_path):
    import importlib.util

    from weavectl.supervisor import service_module, services_for

    everything = services_for(LaunchConfig(state_dir=tmp_path))
    assert "scope-probe" in everything
    app_built = importlib.util.find_spec("services.scope.app.service") is not None
    assert ("scope-app" in everything) is app_built, "the app runs exactly when its module exists"
    without = services_for(LaunchConfig(state_dir=tmp_path, no_scope=True))
    assert without == [s for s in everything if not s.startswith("scope-")]
    assert without[:5] == ["gossip", "ipam", "dns", "datapath", "npc"]
    assert service_module("scope-probe") == "services.scope.probe.service"
    assert service_module("scope-app") == "services.scope.app.service"
    assert service_module("dns") == "services.dns.service"


def test_scope_settings_ports_and_dashed_override(tmp_path, monkeypatch):
    launch = LaunchConfig(state_dir=tmp_path)
    probe = for_service("scope-probe", launch)
    assert probe.metrics_port == 6793 and for_service("scope-app", launch).metrics_port == 6794
    assert (probe.settings.spy_interval_s, probe.settings.publish_interval_s, probe.settings.full_report_every) == (
        1.0, 3.0, 3)
    monkeypatch.setenv("WEAVE_SCOPE_PROBE_METRICS_PORT", "0")
    assert for_service("scope-probe", launch).metrics_port == 0


def test_weave_launch_scope_options(tmp_path):
    from weavectl.cli import build_parser

    args = build_parser().parse_args(["launch", "--no-scope", "--scope-listen", "0.0.0.0:4041",
                                      "--scope-target", "10.0.0.9:4040", "--scope-target", "https://scope.example"])
    assert (args.no_scope, args.scope_listen, args.scope_targets) == (
        True, "0.0.0.0:4041", ["10.0.0.9:4040", "https://scope.example"])
    defaults = build_parser().parse_args(["launch"])
    assert (defaults.no_scope, defaults.scope_listen, defaults.scope_targets) == (False, "127.0.0.1:4040", [])
    cfg = LaunchConfig(state_dir=tmp_path, scope_targets=("a:4040",), scope_token="t")
    cfg.save()
    assert LaunchConfig.load(tmp_path).scope_targets == ("a:4040",)
