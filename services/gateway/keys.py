"""Create gateway API keys and print the SHA-256 entries that the settings take.

    python -m services.gateway.keys new --id team-a --tier standard
    python -m services.gateway.keys new --admin
    python -m services.gateway.keys hash --id team-a < key.txt

`new` writes the key and then its configuration entry to stdout, one per
line, and the instructions to stderr, so a script can read both lines. The
key is printed only this once: the gateway stores no key, only its digest.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from services.gateway.access_settings import DEFAULT_TIER, ApiKeyEntry
from services.gateway.auth import key_digest

# 32 random bytes, as 43 URL-safe base64 characters. The prefix makes a leaked
# key easy to recognise, for example by secret scanners.
KEY_PREFIX = "vs_"
KEY_BYTES = 32


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_entry(key: str, key_id: str, tier: str) -> str:
    """Return the JSON entry of `key` for VS_GATEWAY_API_KEYS; raise ValueError for a bad id."""
    try:
        entry = ApiKeyEntry(id=key_id, sha256=key_digest(key), tier=tier)
    except ValidationError as error:
        problems = "; ".join(f"--{item['loc'][0]}: {item['msg']}" for item in error.errors())
        raise ValueError(problems) from None
    return json.dumps(entry.model_dump())


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway.keys",
        description="Create gateway API keys and print the digests that the settings take.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    new = commands.add_parser("new", help="create a random key and print it with its entry")
    identity = new.add_mutually_exclusive_group(required=True)
    identity.add_argument("--id", dest="key_id", help="client name written to the access log")
    identity.add_argument(
        "--admin",
        action="store_true",
        help="create the admin key and print its digest for VS_GATEWAY_ADMIN_KEY_SHA256",
    )
    new.add_argument("--tier", help=f"client tier (default: {DEFAULT_TIER})")

    hashing = commands.add_parser(
        "hash", help="read a key from stdin and print its SHA-256 digest, or its entry with --id"
    )
    hashing.add_argument("--id", dest="key_id", help="print the VS_GATEWAY_API_KEYS entry")
    hashing.add_argument("--tier", help=f"client tier, with --id (default: {DEFAULT_TIER})")
    return parser


def _new(args: argparse.Namespace) -> int:
    if args.admin and args.tier is not None:
        raise ValueError("--tier applies to API keys only; the admin key has no tier")
    key = generate_key()
    if args.admin:
        print(key)
        print(key_digest(key))
        print(
            "Store the key (line 1) now; it is not shown again. "
            "Set VS_GATEWAY_ADMIN_KEY_SHA256 to line 2.",
            file=sys.stderr,
        )
        return 0
    entry = key_entry(key, args.key_id, args.tier or DEFAULT_TIER)
    print(key)
    print(entry)
    print(
        "Give the key (line 1) to the client now; it is not shown again. "
        "Add the entry (line 2) to the JSON list in VS_GATEWAY_API_KEYS.",
        file=sys.stderr,
    )
    return 0


def _hash(args: argparse.Namespace) -> int:
    if args.tier is not None and args.key_id is None:
        raise ValueError("--tier needs --id, because a bare digest has no tier")
    key = sys.stdin.read().strip()
    if not key:
        print("error: no key on stdin; pipe the key in, e.g. < key.txt", file=sys.stderr)
        return 2
    if args.key_id is None:
        print(key_digest(key))
    else:
        print(key_entry(key, args.key_id, args.tier or DEFAULT_TIER))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return _new(args) if args.command == "new" else _hash(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
