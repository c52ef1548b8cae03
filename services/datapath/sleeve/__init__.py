"""Sleeve: Weave's own UDP encapsulation overlay (spec §4), as sans-I/O cores.

Modules, in the order a frame meets them:
- `frame`: packet codec (sender name, frame headers, batching, special frames);
- `crypto`: encrypted packets (NaCl secretbox, DF/non-DF sequence numbers, replay
  windows);
- `ethernet_decoder`: DF detection, ICMP "fragmentation needed", IPv4 fragmentation;
- `mac_cache`: MAC -> peer, with expiry;
- `frame_router`: forwarding decisions (captured / received frames -> inject, hops)
  and the per-hop MTU fit;
- `forwarder`: per-remote-peer state machine (heartbeats, establishment, frag test,
  PMTU discovery and verification) and batching per channel;
- `overlay`: the forwarder table and the receive/capture paths tying it together.
None of them does I/O or reads a clock: the datapath service's shell owns the sockets
and passes `now` in.
"""
