"""`spdlab admin ...`: users and keys straight in the database (how the first admin is made).

These commands need `spdlab-common` and the database settings (`DATABASE_URL`, or the embedded
default under `SPDLAB_DATA_DIR`); run them where the API runs. Everything else goes through the API.
"""

from __future__ import annotations

from enum import StrEnum
from types import ModuleType
from typing import Annotated

import typer

from spdlab.cli.errors import InputProblem

app = typer.Typer(help="Create users and API keys directly in the database.", no_args_is_help=True)


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


def _common() -> tuple[ModuleType, ModuleType]:
    """Imported on use: the client itself must not depend on the server's package."""
    try:
        from spdlab.common import db, users
    except ImportError:
        raise InputProblem("admin commands need spdlab-common (run them where the API is installed)") from None
    db.upgrade_database()  # idempotent; lets the first admin be made before the stack ever started
    return db, users


@app.command("create-user")
def create_user(
    name: Annotated[str, typer.Option(help="Unique user name")],
    role: Annotated[Role, typer.Option(help="admin or member")] = Role.MEMBER,
    with_key: Annotated[bool, typer.Option("--with-key", help="Also create a key and print it")] = False,
) -> None:
    """Create a user; prints its id (and, with --with-key, its first API key, shown once)."""
    from sqlalchemy.exc import IntegrityError

    db, users = _common()
    try:
        with db.session_scope() as session:
            user = users.create_user(session, name, role.value)
            key = users.create_api_key(session, user)[1] if with_key else None
            user_id = user.id
    except IntegrityError:
        raise InputProblem(f"a user named {name!r} already exists") from None
    typer.echo(f"created {role.value} {name!r} (id {user_id})", err=True)
    typer.echo(key if key else str(user_id))


@app.command("create-key")
def create_key(
    user: Annotated[str, typer.Option(help="User name (or numeric id)")],
    name: Annotated[str, typer.Option(help="A label for the key")] = "default",
) -> None:
    """Create an API key for a user and print it (the only time it is shown)."""
    db, users = _common()
    with db.session_scope() as session:
        row = users.user_by_name(session, user)
        if row is None and user.isdigit():
            row = session.get(users.User, int(user))
        if row is None:
            raise InputProblem(f"no user {user!r}")
        key_row, key = users.create_api_key(session, row, name)
        prefix = key_row.prefix
    typer.echo(f"key {prefix}… for {user!r}; it is shown only now", err=True)
    typer.echo(key)
