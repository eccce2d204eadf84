"""`appliance users ...` and `appliance groups ...`: accounts, second factors, lockouts, groups."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from appliance.acl.principals import add_member, remove_member
from appliance.auth import service as users
from appliance.auth import throttle
from appliance.cli.common import (
    AsJson,
    cli_runtime,
    groups_app,
    operator,
    out,
    print_table,
    users_app,
    write_json,
)
from appliance.core.db import utcnow
from appliance.core.places import CHAT_KEY

Username = Annotated[str, typer.Argument(help="Username.")]
GroupName = Annotated[str, typer.Argument(help="Group name.")]


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Username (1-64 characters, no ':').")],
    admin: Annotated[bool, typer.Option("--admin", help="Give the admin role.")] = False,
) -> None:
    """Create an account and print its one-time password (changed at first sign-in)."""
    with cli_runtime() as rt, rt.sessions() as session:
        user, password = users.create_user(
            session, username=name, role="admin" if admin else "user", actor=operator()
        )
        session.commit()
    out.print(
        f"Created [bold]{user.username}[/bold] ({user.role}). One-time password: "
        f"[bold]{password}[/bold]\nIt is shown once; the person changes it and enrols an "
        "authenticator app at first sign-in."
    )


@users_app.command("list")
def users_list(as_json: AsJson = False) -> None:
    """List accounts with role, state, second factor and lockout."""
    with cli_runtime() as rt, rt.sessions() as session:
        listed = [
            (u, throttle.account_locked_until(session, username=u.username, now=utcnow()))
            for u in users.list_users(session)
        ]
    if as_json:
        write_json(
            [
                {
                    "id": u.id,
                    "username": u.username,
                    "role": u.role,
                    "active": u.is_active,
                    "totp_enrolled": u.totp_enrolled,
                    "must_change_password": u.must_change_password,
                    "locked_until": locked,
                }
                for u, locked in listed
            ]
        )
        return
    print_table(
        ["username", "role", "active", "totp", "must change password", "locked until"],
        [
            [
                u.username,
                u.role,
                "yes" if u.is_active else Text("no", style="red"),
                "enrolled" if u.totp_enrolled else "not yet",
                "yes" if u.must_change_password else "",
                locked.isoformat() if locked else "",
            ]
            for u, locked in listed
        ],
    )


def _user_action(name: str, action: str) -> str | None:
    """Apply one account change as the operator; returns the new password for a reset."""
    result: str | None = None
    with cli_runtime() as rt:
        with rt.sessions() as session:
            user = users.get_user_by_name(session, name)
            now, actor = utcnow(), operator()
            if action == "disable":
                users.set_active(session, user_id=user.id, active=False, actor=actor, now=now)
            elif action == "enable":
                users.set_active(session, user_id=user.id, active=True, actor=actor, now=now)
            elif action == "reset-password":
                result = users.reset_password(session, user_id=user.id, actor=actor, now=now)
            elif action == "reset-totp":
                users.reset_totp(session, user_id=user.id, actor=actor, now=now)
            elif action == "unlock":
                users.unlock(session, user_id=user.id, actor=actor)
            elif action == "delete":
                users.delete_user(session, user_id=user.id, actor=actor)
            session.commit()
        if action == "delete":
            # The conversations went with the account; shredding the key erases old backups too.
            rt.crypto.delete_data_key(CHAT_KEY, user.id)
    return result


@users_app.command("disable")
def users_disable(name: Username) -> None:
    """Disable an account; its sessions and API tokens end at once."""
    _user_action(name, "disable")
    out.print(f"Disabled {name}; its sessions and API tokens ended.")


@users_app.command("enable")
def users_enable(name: Username) -> None:
    """Enable a disabled account."""
    _user_action(name, "enable")
    out.print(f"Enabled {name}.")


@users_app.command("reset-password")
def users_reset_password(name: Username) -> None:
    """Print a new one-time password; the account's sessions and API tokens end."""
    password = _user_action(name, "reset-password")
    out.print(
        f"New one-time password for {name}: [bold]{password}[/bold]\n"
        "It is shown once and must be changed at the next sign-in."
    )


@users_app.command("reset-totp")
def users_reset_totp(name: Username) -> None:
    """Forget the account's authenticator and recovery codes; it enrols again at sign-in."""
    _user_action(name, "reset-totp")
    out.print(f"Second factor of {name} reset; they enrol a new one at the next sign-in.")


@users_app.command("unlock")
def users_unlock(name: Username) -> None:
    """Lift the account's sign-in lockout."""
    _user_action(name, "unlock")
    out.print(f"Unlocked {name}.")


@users_app.command("delete")
def users_delete(
    name: Username,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an account (not the last admin, nor one that owns documents)."""
    if not yes:
        typer.confirm(f"Delete the account {name}?", abort=True)
    _user_action(name, "delete")
    out.print(f"Deleted {name}.")


@groups_app.command("create")
def groups_create(name: GroupName) -> None:
    """Create a group."""
    with cli_runtime() as rt, rt.sessions() as session:
        users.create_group(session, name=name, actor=operator())
        session.commit()
    out.print(f"Created group {name}.")


@groups_app.command("list")
def groups_list(as_json: AsJson = False) -> None:
    """List groups and their members."""
    with cli_runtime() as rt, rt.sessions() as session:
        listed = [
            (group.id, group.name, [m.username for m in members])
            for group, members in users.list_groups(session)
        ]
    if as_json:
        write_json([{"id": i, "name": name, "members": names} for i, name, names in listed])
        return
    print_table(["group", "members"], [[name, ", ".join(names)] for _, name, names in listed])


def _membership(group: str, user: str, *, add: bool) -> bool:
    """Add a user to a group or remove them, as the operator; returns whether it changed."""
    with cli_runtime() as rt, rt.sessions() as session:
        g = users.get_group_by_name(session, group)
        u = users.get_user_by_name(session, user)
        change = add_member if add else remove_member
        changed = change(session, group_id=g.id, user_id=u.id, actor=operator())
        session.commit()
    return changed


@groups_app.command("add-member")
def groups_add_member(group: GroupName, user: Username) -> None:
    """Add a user to a group."""
    changed = _membership(group, user, add=True)
    out.print(f"Added {user} to {group}." if changed else f"{user} is already in {group}.")


@groups_app.command("remove-member")
def groups_remove_member(group: GroupName, user: Username) -> None:
    """Remove a user from a group."""
    changed = _membership(group, user, add=False)
    out.print(f"Removed {user} from {group}." if changed else f"{user} was not in {group}.")


@groups_app.command("delete")
def groups_delete(name: GroupName) -> None:
    """Delete a group and its memberships."""
    with cli_runtime() as rt, rt.sessions() as session:
        users.delete_group(
            session, group_id=users.get_group_by_name(session, name).id, actor=operator()
        )
        session.commit()
    out.print(f"Deleted group {name}.")
