"""Messages every service and the supervisor share: health and process control."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.schemas.base import Message


class HealthRequest(Message):
    """Ask a service whether it is up (`weave.<service>.health`)."""


class HealthReply(Message):
    """A service's answer to HealthRequest."""

    service: str = Field(description="Service name, one of shared.subjects.SERVICES.")
    pid: int = Field(description="OS process id of the service.")
    healthy: bool = Field(description="True when the service does its job; False while it cannot.")
    detail: str = Field("", description="Why it is not healthy, or a short status line.")
    uptime_s: float = Field(description="Seconds since the process started.")
    metrics_port: int = Field(0, description="TCP port of its Prometheus /metrics on 127.0.0.1 (0 = none).")


class ServicesRequest(Message):
    """Ask the supervisor for the host's processes (`weave.supervisor.ps`)."""


class ServiceProcess(Message):
    """One supervised process."""

    name: str = Field(description="Service name, or 'nats' for the bus server.")
    pid: int = Field(description="Current OS pid, 0 when not running.")
    state: Literal["starting", "running", "backoff", "stopped"] = Field(description="Supervisor's view.")
    healthy: bool = Field(description="Last health check answered healthy.")
    restarts: int = Field(description="Times the supervisor restarted it (deaths and requested restarts).")
    started_at: float = Field(description="Unix time of the current process start, 0 when not running.")


class ServicesReply(Message):
    """The supervisor's answer to ServicesRequest."""

    host: str = Field(description="Nickname of this host.")
    supervisor_pid: int = Field(description="OS pid of the supervisor.")
    processes: tuple[ServiceProcess, ...] = Field(description="Every supervised process, nats first.")


class RestartRequest(Message):
    """Restart one service on purpose (`weave.supervisor.restart`)."""

    service: str = Field(description="Service to restart.")
    args: dict[str, str] = Field(default_factory=dict, description="Config overrides for the new process (e.g. datapath mode).")


class StopRequest(Message):
    """Stop the whole stack cleanly (`weave.supervisor.stop`)."""
