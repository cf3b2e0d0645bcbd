"""Test-side name for the local process launcher used by the demo too."""

from scripts.local_stack import ROOT, Server, free_port, running_server

__all__ = ["ROOT", "Server", "free_port", "running_server"]
