"""Accounts, groups, sessions, second factors, API tokens and sign-in throttling."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.core.db import Base, new_id, utcnow


class User(Base):
    """A person who signs in."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")  # "admin" | "user"
    password_hash: Mapped[str] = mapped_column(String(255))
    must_change_password: Mapped[bool] = mapped_column(default=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The TOTP secret, AES-GCM under the system "fields" key; set at enrolment start.
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    totp_enrolled: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The newest accepted time step: a code is accepted only for a later step (no replay).
    totp_last_step: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Credential provenance (DESIGN invariant 4; read by `appliance.auth.provenance`): who set
    # the current password (creation with a one-time password, or a reset), who last reset
    # the second factor (creation counts), and, when the password was set while a second
    # factor was enrolled, who may know that factor. Principals: "user:<id>", "operator:<os>".
    password_set_by: Mapped[str | None] = mapped_column(String(64), default=None)
    password_set_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    totp_reset_by: Mapped[str | None] = mapped_column(String(64), default=None)
    totp_reset_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    password_set_kept_totp: Mapped[bool] = mapped_column(default=False, server_default=false())
    kept_totp_known_by: Mapped[str | None] = mapped_column(String(64), default=None)

    @property
    def principal(self) -> str:
        """This user's own principal."""
        return f"user:{self.id}"

    @property
    def is_admin(self) -> bool:
        """Whether the user holds the admin role."""
        return self.role == "admin"


class Group(Base):
    """A named set of users that grants can name."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class GroupMember(Base):
    """Membership of a user in a group."""

    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AuthSession(Base):
    """A server-side session; the cookie carries the token, the row only its sha256.

    ``kind`` is "full" (signed in with both factors) or "pre" (password accepted; ``stage``
    says what is pending: "totp", "enrol" or "password"). A pre session grants nothing else.
    """

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    stage: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    client: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(200), default=None)


class RecoveryCode(Base):
    """A single-use recovery code, stored argon2-hashed."""

    __tablename__ = "recovery_codes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ApiToken(Base):
    """A personal API token for scripts: hashed, scoped, expiring, revocable."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(64))  # space-separated, e.g. "read write"
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class AuthThrottle(Base):
    """Failed sign-in attempts for one key: "account:<username>" or "client:<address>"."""

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    locked_until: Mapped[dt.datetime | None] = mapped_column(default=None)
