"""Loopback-only network guard for the BentoML server that `python -m bench.serving` starts.

Python imports `sitecustomize` at start-up from `sys.path`, and the harness
puts this folder on the `PYTHONPATH` of the BentoML processes only. The audit
hook raises PermissionError for a socket connection or a DNS look-up of any
host that is not loopback, and appends one line per rejected attempt to the
file named by `BENCH_NETGUARD_LOG`.

NOTE: audit hooks see only calls made through Python's `socket` module, so
native code that opens its own sockets passes unseen. onnxruntime's telemetry
uploader is one case: it resolves its collector's host name in C++. That is
why the harness also disables that uploader and traces `connect` with strace
when strace is installed.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import traceback
from typing import Any

_LOG_VARIABLE = "BENCH_NETGUARD_LOG"
# getaddrinfo(None, port) and "" resolve a local bind address, never a remote host.
# Host names, "localhost" included, are rejected, because whether glibc answers
# them from /etc/hosts or queries a DNS server depends on the machine.
_LOCAL_NAMES = frozenset({"", "0.0.0.0", "::"})


def _is_local(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _reject(event: str, host: Any) -> None:
    path = os.environ.get(_LOG_VARIABLE)
    if path:
        caller = "".join(traceback.format_stack(limit=8)[:-2]).replace("\n", " | ")
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()} {event} {host!r} from {caller}\n")
    raise PermissionError(f"bench network guard: {event} to {host!r} is not allowed")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in ("socket.getaddrinfo", "socket.gethostbyname") and not _is_local(args[0]):
        _reject(event, args[0])
    elif event == "socket.connect":
        address = args[1]
        # AF_UNIX addresses are paths: local by definition.
        if isinstance(address, tuple) and not _is_local(address[0]):
            _reject(event, address[0])


sys.addaudithook(_audit)
