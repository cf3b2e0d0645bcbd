"""Exit 0 when a URL returns 200, else 1: the health check command of the container images.

    python -m services.healthcheck http://127.0.0.1:8001/readyz

The slim base image has neither curl nor wget, and the standard library keeps
this check free of the service's own imports, so it starts in well under a
second.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

HTTP_OK = 200


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.healthcheck",
        description="Exit 0 when GET URL returns 200, else exit 1.",
    )
    parser.add_argument("url", help="URL to request, such as http://127.0.0.1:8000/healthz")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="maximum time in seconds for the response"
    )
    return parser


def check(url: str, timeout: float) -> str | None:
    """Return None when GET `url` returns 200, else why the check failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return f"{url} returned {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return f"{url} failed: {error}"
    return None if status == HTTP_OK else f"{url} returned {status}"


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        print(f"invalid URL {args.url!r}: expected http:// or https://", file=sys.stderr)
        return 2
    problem = check(args.url, args.timeout)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
