"""Scope's probe where the host runs a Docker engine: Docker containers as Scope's
docker reporter writes them (docker_* keys, labels, state, image), the ContainerImage
topology behind the containers-by-image view, processes linked to their container by
cgroup or namespace, and a container both Docker and the datapath know reported once."""
from __future__ import annotations

from services.scope.probe import procfs, templates as t
from services.scope.probe.docker import DockerReporter, container_of_cgroup, image_name_and_tag
from services.scope.probe.host import HostFacts
from services.scope.probe.probe import Probe, SpyInputs
from services.scope.probe.walker import ProcessSample
from shared.docker import DockerContainer
from shared.schemas.datapath import ContainerEvent

NOW = 1_700_000_000_000_000_000
CID, OTHER = "c" * 64, "d" * 64
FACTS = HostFacts(kernel="6.1.0 #1 SMP", uptime_s=755, load1=3.0, cpu=procfs.CpuTimes(1000, 800, 2),
                  mem_used=1 << 30, mem_total=8 << 30, local_networks=("192.168.77.1/24",))


def container(cid=CID, name="web", image="weave-busybox:latest", state="running", pid=100,
              image_id="sha256:" + "e" * 64) -> DockerContainer:
    return DockerContainer.from_inspect({
        "Id": cid, "Name": f"/{name}", "Image": image_id, "Created": "2026-12-03T20:00:00Z",
        "Config": {"Image": image, "Labels": {"app": name}, "Hostname": cid[:12], "Cmd": ["sleep", "600"]},
        "State": {"Status": state, "Pid": pid if state == "running" else 0},
        "NetworkSettings": {"Networks": {"bridge": {"NetworkID": "n", "EndpointID": "e", "IPAddress": "172.17.0.2",
                                                    "IPPrefixLen": 16, "MacAddress": "02:42:ac:11:00:02"}}}})


def sample(pid: int, netns: int = 1) -> ProcessSample:
    return ProcessSample(pid, 1, "sleep", "sleep 600", 1, 0, 4096, 0, 3, 1024, netns, 7)


def latest(node) -> dict:
    return {k: v for k, (_, v) in node.latest.items()}


def test_containers_and_images_in_scopes_docker_keys():
    attached = [ContainerEvent(kind="attached", container_id=CID, cidrs=("10.32.0.5/12",), mac="7a:00:00:00:00:05",
                               fqdn="web.weave.local", netns_inode=42)]
    conts, images = DockerReporter("h1", "probe1").report(
        [container(), container(OTHER, "old", "weave-py:0.1.0", "exited", image_id="sha256:" + "f" * 64)], attached, [sample(100), sample(101)],
        {100: CID}, {100: 12.5}, 2, 8 << 30, NOW)
    web = conts.nodes[f"{CID};<container>"]
    got = latest(web)
    assert got[t.CONTAINER_ID] == CID and got[t.CONTAINER_NAME] == "web"
    assert got[t.CONTAINER_STATE] == "running" and got[t.CONTAINER_STATE_HUMAN] == "Up"
    assert got["docker_image_id"] == "sha256:" + "e" * 64 and got["docker_container_command"] == "sleep 600"
    assert got[t.LABEL_PREFIX + "app"] == "web"
    assert got[t.WEAVE_MAC] == "7a:00:00:00:00:05" and got[t.WEAVE_DNS_HOSTNAME] == "web.weave.local"
    assert web.sets[t.CONTAINER_IPS] == ("10.32.0.5", "172.17.0.2")
    assert web.parents["container_image"] == ("sha256:" + "e" * 64 + ";<container_image>",)
    assert web.metrics[t.CONTAINER_CPU].samples[-1][1] == 12.5
    assert latest(conts.nodes[f"{OTHER};<container>"])[t.CONTAINER_STATE_HUMAN] == "Exited"
    image = latest(images.nodes["sha256:" + "e" * 64 + ";<container_image>"])
    assert (image["docker_image_name"], image["docker_image_tag"]) == ("weave-busybox", "latest")
    image = latest(images.nodes["sha256:" + "f" * 64 + ";<container_image>"])
    assert (image["docker_image_name"], image["docker_image_tag"]) == ("weave-py", "0.1.0")


def test_image_names_and_cgroups():
    assert image_name_and_tag("weave-py:0.1.0") == ("weave-py", "0.1.0")
    assert image_name_and_tag("weave-busybox") == ("weave-busybox", "latest")
    assert image_name_and_tag("localhost:5000/x") == ("localhost:5000/x", "latest")
    cgroup = f"12:pids:/wt-h1-docker/{CID}\n0::/\n"
    assert container_of_cgroup(cgroup, {CID}) == CID
    assert container_of_cgroup(cgroup, {OTHER}) is None
    assert container_of_cgroup("0::/user.slice\n", {CID}) is None


def test_the_probe_reports_a_container_both_know_once_and_links_its_processes():
    probe = Probe("h1", "probe1", "test")
    attached = ContainerEvent(kind="attached", container_id=CID, cidrs=("10.32.0.5/12",), mac="7a:00:00:00:00:05",
                              netns_inode=42)
    netns_only = ContainerEvent(kind="attached", container_id="wt-h1c1", cidrs=("10.32.0.6/12",),
                                mac="7a:00:00:00:00:06", netns_inode=43)
    r = probe.spy(SpyInputs(host=FACTS, processes=[sample(100, 42), sample(200, 43), sample(300)],
                            containers=[attached, netns_only], docker=[container()], docker_pids={100: CID, 300: CID}),
                  NOW)
    assert latest(r.container.nodes[f"{CID};<container>"])[t.CONTAINER_NAME] == "web", "Docker's name, not the id"
    assert "wt-h1c1;<container>" in r.container.nodes
    assert set(r.container_image.nodes) == {"sha256:" + "e" * 64 + ";<container_image>"}
    for pid in (100, 300):  # in its namespace, or by its cgroup (a host-network container's)
        proc = r.process.nodes[f"h1;{pid}"]
        assert proc.parents["container"] == (f"{CID};<container>",)
        assert latest(proc)[t.CONTAINER_ID] == CID
    assert r.process.nodes["h1;200"].parents["container"] == ("wt-h1c1;<container>",)
    bare = probe.spy(SpyInputs(host=FACTS, processes=[sample(300)]), NOW + 1)
    assert not bare.container_image.nodes and "container" not in bare.process.nodes["h1;300"].parents
