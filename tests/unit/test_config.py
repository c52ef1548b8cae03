import ast
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import SETTINGS, LaunchConfig, ServiceConfig, ServiceSettings, for_service, profile

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"gossip": "services/gossip", "ipam": "services/ipam", "dns": "services/dns",
            "datapath": "services/datapath", "npc": "services/npc", "scope-probe": "services/scope/probe",
            "scope-app": "services/scope/app", "docker-plugin": "services/docker_plugin"}
"""The code each service's settings belong to."""
SETTINGS_HOLDER = r"settings$"
"""A setting is read as `<...>settings.<field>` (settings, self.settings, ctx.config.settings)."""
LAUNCH_HOLDER = r"(launch|cfg|config)$"
"""A launch field is read as `<...>launch.<field>` (or cfg./config. where that is the LaunchConfig)."""


def attributes_read(paths, holder: str) -> set[str]:
    """Names read as `<holder>.<name>` in these files, `holder` a regex on the source of
    what the attribute is taken from."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
                    and re.search(holder, ast.unparse(node.value))):
                names.add(node.attr)
    return names


def unread(model, read: set[str]) -> list[str]:
    return [name for name in model.model_fields if name not in read]


def our_code() -> list[Path]:
    return [p for top in ("services", "shared", "weavectl") for p in (REPO / top).rglob("*.py")
            if "node_modules" not in p.parts]


def test_every_setting_is_read_by_the_service_it_belongs_to():
    """A field no code of its service reads is a setting that does nothing: remove it,
    or make the code it names read it (issue 17: DatapathSettings and two of
    GossipSettings' fields were read nowhere while the cores used constants)."""
    assert set(PACKAGES) == set(SETTINGS)
    for service, cls in SETTINGS.items():
        read = attributes_read((REPO / PACKAGES[service]).rglob("*.py"), SETTINGS_HOLDER)
        assert not unread(cls, read), f"{cls.__name__} fields no code of {PACKAGES[service]} reads"


def test_every_launch_and_service_config_field_is_read():
    read = attributes_read(our_code(), LAUNCH_HOLDER)
    assert not unread(LaunchConfig, read), "LaunchConfig fields read nowhere"
    assert not unread(ServiceConfig, read), "ServiceConfig fields read nowhere"


def test_the_read_check_finds_a_field_read_nowhere():
    class Unused(ServiceSettings):
        a_timer_nobody_reads_s: float = 1.0

    read = attributes_read((REPO / PACKAGES["gossip"]).rglob("*.py"), SETTINGS_HOLDER)
    assert unread(Unused, read) == ["a_timer_nobody_reads_s"]
    assert "gossip_interval_s" in read and "gossip_interval_s" not in attributes_read(
        (REPO / PACKAGES["gossip"]).rglob("*.py"), r"^nothing$")


def test_every_field_is_documented_once_here():
    for model in (LaunchConfig, ServiceConfig, *SETTINGS.values()):
        for name, field in model.model_fields.items():
            assert field.description and len(field.description) > 10, f"{model.__name__}.{name} is undocumented"
    for cls in SETTINGS.values():
        assert set(cls.TEST) <= set(cls.model_fields), f"{cls.__name__}.TEST names no field"


def test_named_profiles():
    prod, test = profile("production"), profile("test")
    assert set(prod) == set(test) == set(SETTINGS)
    assert (test["npc"].resync_s, prod["npc"].resync_s) == (2.0, 30.0)
    assert (test["ipam"].gossip_interval_s, test["ipam"].container_died_s, test["ipam"].tick_s) == (5.0, 3.0, 1.0)
    assert prod["datapath"] == SETTINGS["datapath"]()


def test_cores_take_their_defaults_from_the_production_profile():
    from services.datapath.sleeve.forwarder import Heartbeats
    from services.datapath.sleeve.mac_cache import MAX_AGE
    from services.gossip.protocol import TCP_HEARTBEAT
    from services.gossip.router import TOPOLOGY_DEFER, RouterConfig
    from services.gossip.surrogate_gossiper import GOSSIP_INTERVAL

    gossip, datapath = profile("production")["gossip"], profile("production")["datapath"]
    assert (GOSSIP_INTERVAL, TCP_HEARTBEAT, TOPOLOGY_DEFER) == (
        gossip.gossip_interval_s, gossip.heartbeat_s, gossip.topology_defer_s) == (30.0, 30.0, 1.0)
    assert (RouterConfig.gossip_interval, RouterConfig.heartbeat, RouterConfig.topology_defer) == (30.0, 30.0, 1.0)
    assert Heartbeats() == (datapath.fast_heartbeat_s, datapath.slow_heartbeat_s) == (0.5, 10.0)
    assert Heartbeats().timeout == 60.0 and MAX_AGE == datapath.mac_expiry_s == 600.0


def test_the_gossip_service_runs_its_settings(tmp_path):
    from services.gossip.service import router_config
    from shared.config import GossipSettings

    launch = LaunchConfig(state_dir=tmp_path, name="aa:00:00:00:00:01", nickname="h1")
    config = router_config(launch, GossipSettings(gossip_interval_s=3.0, heartbeat_s=7.0, topology_defer_s=0.25))
    assert (config.gossip_interval, config.heartbeat, config.topology_defer) == (3.0, 7.0, 0.25)


@pytest.mark.parametrize("launched, env, mode", [
    ("auto", {}, "auto"),
    ("fastpath", {}, "fastpath"),
    ("auto", {"WEAVE_OVERRIDE_DATAPATH": "sleeve"}, "sleeve"),
    ("sleeve", {"WEAVE_OVERRIDE_DATAPATH": "fastpath"}, "fastpath"),
    ("sleeve", {"WEAVE_OVERRIDE_DATAPATH": "auto"}, "auto"),
    ("fastpath", {"WEAVE_OVERRIDE_DATAPATH": ""}, "fastpath"),  # compose passes an empty one: none
])
def test_datapath_mode_from_launch_and_restart_override(tmp_path, launched, env, mode):
    """`weave restart datapath --datapath MODE` (WEAVE_OVERRIDE_DATAPATH, from the
    supervisor or compose) over the launch config, applied when the config is loaded."""
    assert for_service("datapath", LaunchConfig(state_dir=tmp_path, datapath=launched), env).launch.datapath == mode


def test_restart_overrides_are_checked(tmp_path):
    assert LaunchConfig.override_environment({"datapath": "sleeve"}) == {"WEAVE_OVERRIDE_DATAPATH": "sleeve"}
    with pytest.raises(ValueError, match="cannot override port"):
        LaunchConfig.override_environment({"port": "1"})
    with pytest.raises(ValidationError):
        for_service("datapath", LaunchConfig(state_dir=tmp_path), {"WEAVE_OVERRIDE_DATAPATH": "warp"})
    launch = LaunchConfig(state_dir=tmp_path)
    assert launch.with_overrides({}) is launch


def test_weave_launch_without_flags_is_launch_configs_defaults(tmp_path, monkeypatch):
    """The CLI states no default of its own: `weave launch` with no flag gives
    LaunchConfig's defaults (a peer name and nickname are filled in; no engine here)."""
    from weavectl.cli import build_parser, launch_config

    for var in ("WEAVE_PASSWORD", "WEAVE_SCOPE_TOKEN", "DOCKER_HOST"):
        monkeypatch.delenv(var, raising=False)
    args = build_parser("launch").parse_args(["--state-dir", str(tmp_path), "launch", "--no-docker"])
    got, default = launch_config(args), LaunchConfig(state_dir=tmp_path)
    for field in LaunchConfig.model_fields:
        if field not in ("nickname",):
            assert getattr(got, field) == getattr(default, field), field


def test_every_service_has_settings_for_both_profiles(tmp_path):
    for service, cls in SETTINGS.items():
        prod = for_service(service, LaunchConfig(state_dir=tmp_path)).settings
        test = for_service(service, LaunchConfig(state_dir=tmp_path, profile="test")).settings
        assert isinstance(prod, cls) and isinstance(test, cls)
        for field in cls.TEST:
            assert getattr(test, field) < getattr(prod, field), f"{service}.{field} is not shorter in test"


def test_weave_defaults_in_production(tmp_path):
    gossip = for_service("gossip", LaunchConfig(state_dir=tmp_path)).settings
    assert gossip.gossip_interval_s == 30.0 and gossip.heartbeat_s == 30.0 and gossip.topology_defer_s == 1.0


def test_launch_config_round_trips_and_is_private(tmp_path):
    cfg = LaunchConfig(state_dir=tmp_path, password="pw", peers=("10.0.0.1",))
    path = cfg.save()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert LaunchConfig.load(tmp_path) == cfg


def test_launch_config_is_read_again_only_when_the_file_changed(tmp_path):
    """A service forked from the supervisor gets the supervisor's copy (no validation
    run again, issue 15); a launch.json replaced since is read afresh."""
    LaunchConfig(state_dir=tmp_path, nickname="first").save()
    first = LaunchConfig.load(tmp_path)
    assert LaunchConfig.load(tmp_path) is first
    LaunchConfig(state_dir=tmp_path, nickname="second").save()
    assert LaunchConfig.load(tmp_path).nickname == "second"
    other = tmp_path / "other"
    other.mkdir()
    LaunchConfig(state_dir=other, nickname="other").save()
    assert LaunchConfig.load(other).nickname == "other" and LaunchConfig.load(tmp_path).nickname == "second"
    (tmp_path / "launch.json").unlink()
    with pytest.raises(FileNotFoundError):
        LaunchConfig.load(tmp_path)


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
