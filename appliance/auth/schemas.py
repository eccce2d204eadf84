"""Request and response bodies of the sign-in, account and admin API."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["admin", "user"]
Scope = Literal["read", "write", "admin"]
Stage = Literal["totp", "enrol", "password", "done"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(_In):
    """Username and password."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TotpIn(_In):
    """A code from the authenticator app, or one recovery code."""

    code: str | None = Field(None, max_length=16, description="Six digits from the app.")
    recovery_code: str | None = Field(None, max_length=32, description="A recovery code.")


class CodeIn(_In):
    """A code from the authenticator app."""

    code: str = Field(min_length=1, max_length=16)


class PasswordIn(_In):
    """The current password and the new one (12 or more characters, not a common one)."""

    old: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    """An account as its owner and admins see it."""

    id: str
    username: str
    role: Role
    is_active: bool
    must_change_password: bool
    totp_enrolled: bool
    created_at: dt.datetime


class GroupRef(BaseModel):
    """A group an account is in."""

    id: str
    name: str


class AdminUserOut(UserOut):
    """An account with its lockout state, groups and pending role change, for admins."""

    locked_until: dt.datetime | None = None
    groups: list[GroupRef] = Field(default_factory=list, description="Groups it is in.")
    pending_admin: str | None = Field(
        None, description="The pending request (its id) that makes this account an admin."
    )


class EnrolmentOut(BaseModel):
    """How to add the account to an authenticator app: scan the QR code or type the secret."""

    secret: str
    uri: str
    qr_svg: str


class SignInOut(BaseModel):
    """What comes next: 'totp' (send a code), 'enrol' (scan, then confirm a code),
    'password' (change the one-time password) or 'done' (signed in)."""

    stage: Stage
    csrf_token: str
    user: UserOut | None = None
    enrolment: EnrolmentOut | None = None
    recovery_codes: list[str] | None = Field(
        None, description="Ten single-use recovery codes, shown only once."
    )


class CsrfOut(BaseModel):
    """The CSRF token to send as X-CSRF-Token (also in the readable CSRF cookie)."""

    csrf_token: str


class MeOut(BaseModel):
    """The signed-in user."""

    user: UserOut
    groups: list[str]
    via: Literal["session", "token"]
    recovery_codes_left: int


class SessionOut(BaseModel):
    """One of the user's sessions."""

    id: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    client: str | None
    user_agent: str | None
    current: bool


class EndedOut(BaseModel):
    """How many sessions were ended (and, when all others were, API tokens revoked)."""

    ended: int
    tokens_revoked: int = 0


class TokenIn(_In):
    """A new API token: a name, its scopes and lifetime in days."""

    name: str = Field(min_length=1, max_length=64)
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    days: int = Field(30, ge=1, le=366)


class TokenOut(BaseModel):
    """An API token's metadata (never its secret)."""

    id: str
    name: str
    scopes: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class RecoveryCodesIn(_In):
    """Proof for new recovery codes: a current authenticator code, or the password."""

    code: str | None = Field(None, max_length=16, description="Six digits from the app.")
    password: str | None = Field(None, max_length=1024, description="Your password.")


class RecoveryCodesOut(BaseModel):
    """Ten new single-use recovery codes (the old ones stop working); shown only now."""

    recovery_codes: list[str]


class TokenCreatedOut(BaseModel):
    """A new token: the secret is shown only now."""

    token: str
    info: TokenOut


class UserCreateIn(_In):
    """A new account."""

    username: str = Field(min_length=1, max_length=64)
    role: Role = "user"


class UserCreatedOut(BaseModel):
    """The new account and its one-time password (shown once; must be changed at sign-in)."""

    user: AdminUserOut
    one_time_password: str
    approval_id: str | None = Field(
        None, description="Set when the admin role waits for a second admin's approval."
    )
    waiting_note: str | None = Field(
        None, description="Why nobody can approve that yet (no second admin), and how to fix it."
    )


class UserPatchIn(_In):
    """Change an account's role."""

    role: Role


class OneTimePasswordOut(BaseModel):
    """A new one-time password, shown once."""

    one_time_password: str


class GroupIn(_In):
    """A new group."""

    name: str = Field(min_length=1, max_length=64)


class MemberRef(BaseModel):
    """A member of a group."""

    id: str
    username: str


class GroupOut(BaseModel):
    """A group and its members."""

    id: str
    name: str
    members: list[MemberRef]


class MemberIn(_In):
    """The user to add to a group."""

    user_id: str = Field(min_length=1, max_length=32)


class ChangedOut(BaseModel):
    """Whether the request changed anything."""

    changed: bool
