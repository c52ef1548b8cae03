"""The mesh protocol's message tags (mesh:protocol.go), spoken by the gossip service on
TCP 6783 and by the datapath for the sleeve's control messages on UDP 6783."""
from __future__ import annotations

import enum


class ProtocolTag(enum.IntEnum):
    """First byte of every message body after the features (append-only)."""

    HEARTBEAT = 0
    RESERVED1 = 1  # legacy sleeve control messages ("compat" overlay, spec §4)
    RESERVED2 = 2
    RESERVED3 = 3
    GOSSIP = 4
    GOSSIP_UNICAST = 5
    GOSSIP_BROADCAST = 6
    OVERLAY_CONTROL = 7
