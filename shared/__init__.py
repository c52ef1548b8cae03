"""The code every service imports. Importing any of it first tells pydantic that we run
no pydantic plugins (shared/imports.py: it saves importing importlib.metadata)."""
from shared.imports import no_pydantic_plugins as _no_pydantic_plugins

_no_pydantic_plugins()
