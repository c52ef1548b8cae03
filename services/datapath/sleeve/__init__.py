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

Peers: the shell hands the cores PeerNames (forwarders, routes, ourself); the peers a
frame names are decoded as plain ints on every packet (`frame`), and stay ints in the
MAC cache and hops, since building a PeerName per frame would cost on the hot path. A
PeerName is an int, so the two hash and compare equal wherever they meet.
"""
