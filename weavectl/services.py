"""Which module runs each service of a host's stack (the supervisor starts them by
name: weavectl never imports a service's code for its own use)."""
from __future__ import annotations

from shared import subjects

_SPECIAL = {"scope-probe": "services.scope.probe.service", "scope-app": "services.scope.app.service",
            "docker-plugin": "services.docker_plugin.service"}

SERVICE_MODULES: dict[str, str] = {name: _SPECIAL.get(name, f"services.{name}.service") for name in subjects.SERVICES}
"""Service name -> the module whose `main()` runs it."""


def service_module(name: str) -> str:
    return SERVICE_MODULES.get(name, f"services.{name}.service")
