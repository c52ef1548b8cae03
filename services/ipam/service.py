"""The `ipam` service process (asyncio shell). See ARCHITECTURE.md for what it owns.

Until its own issue lands it runs as an idle service: it joins the host's bus, answers
`weave.ipam.health` and serves /metrics, so the stack, the supervisor and the testbed
are whole from the first commit.
"""
from __future__ import annotations

from shared.service import IdleApp, run_service


def main() -> None:
    run_service("ipam", IdleApp)


if __name__ == "__main__":
    main()
