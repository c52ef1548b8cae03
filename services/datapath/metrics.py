"""Prometheus metrics of the datapath, read from the cores at scrape time (the data path
only bumps plain integers). Weave Net has no sleeve metrics; ours are `weave_sleeve_*`:
- weave_sleeve_frames_total{direction}: captured (from the bridge), injected (into
  it), forwarded (handed to a forwarder, per next hop), relayed (received for another
  peer, or re-flooded);
- weave_sleeve_bytes_total{direction}: captured, injected, forwarded, received (UDP payloads);
- weave_sleeve_received_packets_total: UDP datagrams read (a segment train counts once);
- weave_sleeve_trains_total{read}: segment trains received whole, by how they were read
  (whole: in one GRO read; pieces: reassembled across reads or datagrams), and
  weave_sleeve_trains_sent_total (sleeve/train.py);
- weave_sleeve_dropped_total{reason}: datagrams and frames dropped, by reason
  (unknown_sender, decrypt_failed, replay, truncated_frame, unknown_peer, looped, ...);
- weave_sleeve_forwarders{state}: forwarders by state;
- weave_attached_containers: containers on the bridge.
"""
from __future__ import annotations

from typing import Callable, Iterator

from shared.prom import CounterMetricFamily, GaugeMetricFamily, Metric

from services.datapath.overlay_shell import OverlayShell


class DatapathCollector:
    def __init__(self, overlay: Callable[[], OverlayShell | None], attached: Callable[[], int]) -> None:
        """`overlay`: the overlay shell now (None while it is not running); `attached`:
        how many containers are attached now."""
        self.overlay, self.attached = overlay, attached

    def collect(self) -> Iterator[Metric]:
        overlay = self.overlay()
        frames = CounterMetricFamily("weave_sleeve_frames", "Frames through the sleeve overlay.", labels=["direction"])
        octets = CounterMetricFamily("weave_sleeve_bytes", "Bytes through the sleeve overlay.", labels=["direction"])
        packets = CounterMetricFamily("weave_sleeve_received_packets", "UDP datagrams received by the sleeve.")
        drops = CounterMetricFamily("weave_sleeve_dropped", "Frames and datagrams dropped, by reason.",
                                    labels=["reason"])
        fwds = GaugeMetricFamily("weave_sleeve_forwarders", "Sleeve forwarders by state.", labels=["state"])
        trains = CounterMetricFamily("weave_sleeve_trains", "Segment trains received whole, by how they were read.",
                                     labels=["read"])
        trains_sent = CounterMetricFamily("weave_sleeve_trains_sent", "Segment trains sent.")
        if overlay is not None:
            shell = overlay.sleeve
            s = shell.overlay.stats
            for direction in ("captured", "injected", "forwarded", "relayed"):
                frames.add_metric([direction], getattr(s, direction))
            for direction in ("captured", "injected", "forwarded"):
                octets.add_metric([direction], getattr(s, f"{direction}_bytes"))
            octets.add_metric(["received"], s.received_bytes)
            packets.add_metric([], s.received_packets)
            for reason, n in sorted(shell.drop_counts().items()):
                drops.add_metric([reason], n)
            for state, n in shell.forwarder_states().items():
                fwds.add_metric([state], n)
            trains.add_metric(["whole"], shell.trains_in.whole)
            trains.add_metric(["pieces"], shell.trains_in.trains - shell.trains_in.whole)
            trains_sent.add_metric([], shell.trains_out.sent)
        yield from (frames, octets, packets, drops, fwds, trains, trains_sent)
        attached = GaugeMetricFamily("weave_attached_containers", "Containers attached to the weave bridge.")
        attached.add_metric([], self.attached())
        yield attached
