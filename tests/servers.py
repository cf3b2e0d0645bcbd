"""Test-side name for the local process launcher used by the demo too."""

from scripts.local_stack import (
    GATEWAY_OPEN_ACCESS_ENV,
    ROOT,
    Server,
    free_port,
    running_server,
)

__all__ = ["GATEWAY_OPEN_ACCESS_ENV", "ROOT", "Server", "free_port", "running_server"]
