"""Credential provenance: which admin may know an account's credentials, and so control it.

DESIGN invariant 4 counts an account "whose credentials that admin created or reset" as that
admin's. This module keeps the facts (columns on `users`, written when an account is
created or a credential is reset) and derives from them who may be able to sign in as an
account besides its owner: its *controller*.

The model is about knowledge, and it is conservative (it may name a controller who in fact
lost control; it never misses one):

- Whoever creates an account with a one-time password, or resets its password, knows that
  password. A password change needs the old password and a full sign-in, so whoever could
  sign in at the time may be the one who changed it: the setter keeps knowing the password
  unless the owner changed it using a second factor the setter never had.
- A second factor is enrolled by whoever knows the password at the time. After a reset (or
  at creation) there is none, and whoever knows the password can enrol one.
- An admin controls an account when they may know its password and its second factor (or
  there is none yet). So an account an admin created stays theirs until someone else (another
  admin, or the operator's CLI) resets one of its factors and the owner completes the other
  one; an admin who resets only the password of an enrolled account loses it as soon as the
  owner changes that password (signing in with their own second factor).

Sign-in (`appliance.auth.signin`) records nothing here: it sets ``password_changed_at`` and
``totp_enrolled`` as always, and the derivation reads them. Operators ("operator:<os user>")
are trusted and control nothing. `people` follows controllers upward (an admin controlled by
another admin is that admin too), `circle` downward; `same_person` is the question the
approvals and the access rules ask.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.auth.tables import User

ABSENT = "<absent>"
"""The second factor of an account that has none enrolled: whoever knows the password can."""


@dataclass(frozen=True)
class Credentials:
    """The provenance facts of one account, as stored (see `appliance.auth.tables.User`)."""

    principal: str
    password_set_by: str | None
    password_set_at: dt.datetime | None
    password_changed_at: dt.datetime | None
    totp_enrolled: bool
    totp_reset_by: str | None
    password_set_kept_totp: bool
    kept_totp_known_by: str | None

    @classmethod
    def of(cls, user: User) -> Credentials:
        """The facts of a user row."""
        return cls(
            principal=user.principal,
            password_set_by=user.password_set_by,
            password_set_at=user.password_set_at,
            password_changed_at=user.password_changed_at,
            totp_enrolled=bool(user.totp_enrolled),
            totp_reset_by=user.totp_reset_by,
            password_set_kept_totp=bool(user.password_set_kept_totp),
            kept_totp_known_by=user.kept_totp_known_by,
        )

    def password_known_by(self) -> str | None:
        """The principal besides the owner who may know the current password."""
        setter = self.password_set_by
        if setter is None or self.password_set_at is None:
            return None
        changed = (
            self.password_changed_at is not None and self.password_changed_at > self.password_set_at
        )
        # Every change since the password was set used the second factor enrolled then (it
        # has not been reset since): if the setter never had that factor, the owner changed
        # it, and the setter no longer knows the password.
        if changed and self.password_set_kept_totp and self.kept_totp_known_by != setter:
            return None
        return setter

    def totp_known_by(self) -> str | None:
        """Who besides the owner may know the second factor (`ABSENT` when none is enrolled)."""
        if not self.totp_enrolled:
            return ABSENT
        if self.password_set_kept_totp:
            return self.kept_totp_known_by
        # Enrolled after the password was last set and the factor last reset: by whoever
        # knew the password then, which the setter may have been.
        return self.password_set_by if self.password_set_at is not None else None

    def controller(self) -> str | None:
        """The admin ("user:<id>") who may sign in as this account besides its owner, if any."""
        knower = self.password_known_by()
        if knower is None or not knower.startswith("user:") or knower == self.principal:
            return None
        second = self.totp_known_by()
        return knower if second in (ABSENT, knower) else None

    def after_password_reset(self, *, by: str, now: dt.datetime) -> Credentials:
        """The facts once `by` sets a new one-time password."""
        settled = self.settled()
        return replace(
            settled,
            password_set_by=by,
            password_set_at=now,
            password_set_kept_totp=settled.totp_enrolled,
            kept_totp_known_by=settled.totp_known_by() if settled.totp_enrolled else None,
        )

    def after_totp_reset(self, *, by: str) -> Credentials:
        """The facts once `by` forgets the second factor."""
        return replace(
            self.settled(),
            totp_enrolled=False,
            totp_reset_by=by,
            password_set_kept_totp=False,
            kept_totp_known_by=None,
        )

    def settled(self) -> Credentials:
        """The same knowledge, with a setter who no longer knows the password forgotten.

        A later reset of the second factor ends the "kept factor" fact the release rests on,
        so what it proved is written down first. Who may know the kept factor stays known.
        """
        if self.password_set_by is not None and self.password_known_by() is None:
            return replace(self, password_set_by=None)
        return self

    def apply(self, user: User) -> None:
        """Write the facts back to the user row."""
        user.password_set_by = self.password_set_by
        user.password_set_at = self.password_set_at
        user.totp_reset_by = self.totp_reset_by
        user.password_set_kept_totp = self.password_set_kept_totp
        user.kept_totp_known_by = self.kept_totp_known_by


def record_created(user: User, *, by: str, now: dt.datetime) -> None:
    """A new account with a one-time password from `by`, and no second factor yet."""
    user.password_set_by = by
    user.password_set_at = now
    user.totp_reset_by = by
    user.totp_reset_at = now
    user.password_set_kept_totp = False
    user.kept_totp_known_by = None


def record_password_reset(user: User, *, by: str, now: dt.datetime) -> None:
    """`by` gave the account a new one-time password.

    An admin account resetting its own password is whoever may be acting as it: its
    controller, if it has one, knows the new password as well as it knew the old one.
    """
    if by == user.principal:
        by = controller(user) or by
    Credentials.of(user).after_password_reset(by=by, now=now).apply(user)


def record_totp_reset(user: User, *, by: str, now: dt.datetime) -> None:
    """`by` made the account forget its second factor."""
    Credentials.of(user).after_totp_reset(by=by).apply(user)
    user.totp_reset_at = now


def controller(user: User) -> str | None:
    """The admin principal who may sign in as this account besides its owner, if any."""
    return Credentials.of(user).controller()


def _user_id(principal: str | None) -> str | None:
    if principal is None or not principal.startswith("user:"):
        return None
    return principal.removeprefix("user:")


def people(session: Session, user: User) -> set[str]:
    """The user ids of everyone who may act as this account: itself and its controllers, up."""
    found = {user.id}
    current: User | None = user
    while current is not None:
        above = _user_id(controller(current))
        if above is None or above in found:
            break
        found.add(above)
        current = session.get(User, above)
    return found


def same_person(session: Session, a: User, b: User) -> bool:
    """Whether one person may be acting as both accounts (a controller in common, or one)."""
    return bool(people(session, a) & people(session, b))


def circle(session: Session, user: User) -> set[str]:
    """The user ids of every account that may be the same person as this one.

    The accounts whose `people` meet this user's: its controllers up the chain, and every
    account any of them controls, down the chain.
    """
    found = people(session, user)
    frontier = set(found)
    while frontier:
        setters = [f"user:{uid}" for uid in frontier]
        frontier = set()
        for row in session.execute(select(User).where(User.password_set_by.in_(setters))).scalars():
            above = _user_id(controller(row))
            if row.id not in found and above is not None and above in found:
                found.add(row.id)
                frontier.add(row.id)
    return found
