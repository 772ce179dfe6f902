"""Bootstrap commands run next to the database: create the first admin, users and keys.

    python -m spdlab.common.admin create-user NAME [--role admin|member] [--max-active-jobs N]
    python -m spdlab.common.admin create-key NAME [--key-name LABEL]
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import func, select

from spdlab.common.db import session_scope, upgrade_database
from spdlab.common.models import User
from spdlab.common.settings import Settings, get_settings
from spdlab.common.users import create_api_key, create_user, user_by_name


def ensure_admin(settings: Settings, name: str = "admin") -> str | None:
    """Create an admin with a key when there are no users yet; returns the key (or None)."""
    with session_scope(settings) as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
        user = create_user(session, name, "admin")
        return create_api_key(session, user, "bootstrap")[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spdlab.common.admin")
    sub = parser.add_subparsers(dest="command", required=True)
    cu = sub.add_parser("create-user", help="create a user and print a new API key")
    cu.add_argument("name")
    cu.add_argument("--role", choices=["admin", "member"], default="member")
    cu.add_argument("--max-active-jobs", type=int, default=None)
    ck = sub.add_parser("create-key", help="print a new API key for an existing user")
    ck.add_argument("name")
    ck.add_argument("--key-name", default="cli")
    args = parser.parse_args(argv)

    settings = get_settings()
    upgrade_database(settings.effective_database_url)
    with session_scope(settings) as session:
        if args.command == "create-user":
            if user_by_name(session, args.name) is not None:
                print(f"user {args.name!r} already exists", file=sys.stderr)
                return 1
            user = create_user(session, args.name, args.role, args.max_active_jobs)
            key = create_api_key(session, user, "cli")[1]
        else:
            found = user_by_name(session, args.name)
            if found is None:
                print(f"no user {args.name!r}", file=sys.stderr)
                return 1
            key = create_api_key(session, found, args.key_name)[1]
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
