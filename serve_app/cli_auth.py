"""``agentserve token ...`` and ``agentserve keys ...``: mint JWTs, manage API keys in the store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from agent.errors import AgentError
from agent.keys import SCOPES, ApiKeyStore
from serve_app.auth import api_keys
from serve_app.auth.api_keys import ApiKeyInfo
from serve_app.auth.config import AuthSettings
from serve_app.settings import Settings

R = TypeVar("R")


SCOPES_HELP = f"comma-separated: {','.join(SCOPES)} or tools:<name>"


def _scopes(text: str) -> list[str]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    try:
        return api_keys.check_scopes(scopes)  # the same rule as the API: known scopes and tools:<name>
    except AgentError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: got {scopes}") from None


def cmd_token_mint(args: argparse.Namespace) -> int:
    from serve_app.auth.jwt import mint_token  # NOTE: imported here, so `agentserve run` starts without it

    private_key = Path(args.private_key).read_text() if args.private_key else None
    token = mint_token(args.sub, args.scopes, args.ttl, AuthSettings(), private_key_pem=private_key, kid=args.kid)
    print(token)
    return 0


def _with_store(use: Callable[[ApiKeyStore], Awaitable[R]]) -> R:
    """Run ``use`` against the store of DATABASE_URL / AGENTSERVE_DATA_DIR (migrated first)."""
    from memory.factory import build_conversation_store  # NOTE: imported here: psycopg is slow to import

    settings = Settings()
    url = settings.database_url.get_secret_value() if settings.database_url else None
    store = build_conversation_store(url, settings.agentserve_data_dir)
    if not isinstance(store, ApiKeyStore):
        raise SystemExit("this conversation store keeps no API keys")

    async def run() -> R:
        await store.setup()
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _row(k: ApiKeyInfo) -> str:
    state = "revoked" if k.revoked_at else "active"
    fields = [k.id, k.prefix, k.owner, k.name, ",".join(k.scopes), _when(k.created_at), _when(k.last_used_at), state]
    return "\t".join(fields)


def cmd_keys_create(args: argparse.Namespace) -> int:
    made = _with_store(lambda store: api_keys.create_api_key(store, args.owner, args.name, args.scopes))
    print(made.key)
    print(f"created {made.record.id} for {made.record.owner} ({','.join(made.record.scopes)}); "
          "the key above is shown only now", file=sys.stderr)  # fmt: skip
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    records = _with_store(lambda store: store.list_api_keys(args.owner))
    print("\t".join(["id", "prefix", "owner", "name", "scopes", "created", "last_used", "state"]))
    for r in records:
        print(_row(ApiKeyInfo.of(r)))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    _with_store(lambda store: store.revoke_api_key(args.id))
    print(f"revoked {args.id}")
    return 0


def _guarded(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Known failures as one line on stderr and exit status 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return cmd(args)
        except AgentError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
        except ValueError as exc:  # settings refused, a missing key
            print(f"error: {exc}", file=sys.stderr)
        return 1

    return run


def _seconds(value: str) -> int:
    """An argparse type: a positive whole number of seconds."""
    if not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number of seconds")
    return int(value)


def add_auth_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``token`` and ``keys`` on the ``agentserve`` parser's subcommands."""
    token = sub.add_parser("token", help="JWTs for callers (signed with the JWT_* settings)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    mint = token_sub.add_parser("mint", help="print a signed JWT")
    mint.add_argument("--sub", required=True, help="the principal id")
    mint.add_argument("--scopes", type=_scopes, default=["chat"], help=SCOPES_HELP)
    mint.add_argument("--ttl", type=_seconds, default=3600, help="seconds until it expires")
    mint.add_argument("--private-key", default=None, help="PEM file, for RS/PS/ES/EdDSA algorithms")
    mint.add_argument("--kid", default=None, help="key id header (for JWKS verifiers)")
    mint.set_defaults(func=_guarded(cmd_token_mint))

    keys = sub.add_parser("keys", help="API keys in the conversation store (DATABASE_URL)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key; prints it once")
    create.add_argument("--owner", required=True, help="the principal id the key acts as")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--scopes", type=_scopes, required=True, help=SCOPES_HELP)
    create.set_defaults(func=_guarded(cmd_keys_create))
    listing = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--owner", default=None)
    listing.set_defaults(func=_guarded(cmd_keys_list))
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=_guarded(cmd_keys_revoke))
