"""HTTP API for signing in, one's own sessions and API tokens (administration: admin_routes)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.auth import sessions, signin, tokens
from appliance.auth.schemas import (
    CodeIn,
    CsrfOut,
    EndedOut,
    EnrolmentOut,
    LoginIn,
    MeOut,
    PasswordIn,
    RecoveryCodesIn,
    RecoveryCodesOut,
    SessionOut,
    SignInOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    TotpIn,
    UserOut,
)
from appliance.auth.signin import Client, Step
from appliance.auth.tables import ApiToken, AuthSession, Group, GroupMember, User
from appliance.core.config import Settings
from appliance.core.errors import NotAuthenticated, NotFound, PermissionDenied, SignInFailed
from appliance.deps import (
    CSRF_HEADER,
    CallerDep,
    NowDep,
    RuntimeDep,
    SessionDep,
    authenticate,
    client_address,
    cookie_names,
)
from appliance.middleware.csrf import set_csrf_cookie

# Quiet validation: a 422 never echoes what was sent (a password, a code).
router = APIRouter(prefix="/api/auth", tags=["auth"])


@contextmanager
def _unit(session: Session) -> Iterator[None]:
    """Commit on success; on a failed sign-in also commit, so the failure is counted."""
    try:
        yield
    except SignInFailed:
        session.commit()
        raise
    session.commit()


def _client(request: Request) -> Client:
    return Client(address=client_address(request), user_agent=request.headers.get("user-agent"))


def user_out(user: User) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


def _set_cookie(response: Response, name: str, value: str, settings: Settings) -> None:
    response.set_cookie(
        name,
        value,
        path="/",
        secure=settings.auth.cookie_secure,
        httponly=True,
        samesite="strict",
    )


def _delete_cookie(response: Response, name: str, settings: Settings) -> None:
    response.delete_cookie(
        name, path="/", secure=settings.auth.cookie_secure, httponly=True, samesite="strict"
    )


def _hand_out(step: Step, response: Response, settings: Settings) -> SignInOut:
    """Put the step's session in the right cookie and describe what comes next."""
    names = cookie_names(settings.auth)
    if step.stage == "done":
        _set_cookie(response, names.session, step.issued.token, settings)
        _delete_cookie(response, names.preauth, settings)
    else:
        _set_cookie(response, names.preauth, step.issued.token, settings)
        _delete_cookie(response, names.session, settings)
    set_csrf_cookie(response, step.issued.csrf, settings)
    enrolment = step.enrolment
    return SignInOut(
        stage=step.stage,  # type: ignore[arg-type]
        csrf_token=step.issued.csrf,
        user=user_out(step.user) if step.stage == "done" else None,
        enrolment=(
            EnrolmentOut(secret=enrolment.secret, uri=enrolment.uri, qr_svg=enrolment.qr_svg)
            if enrolment is not None
            else None
        ),
        recovery_codes=step.recovery_codes or None,
    )


def _pre_session(
    request: Request, session: Session, rt_settings: Settings, now: dt.datetime
) -> AuthSession:
    """The caller's pre-auth session, with its CSRF token checked."""
    token = request.cookies.get(cookie_names(rt_settings.auth).preauth)
    row = (
        sessions.lookup(session, token=token, kind=sessions.PRE, now=now, settings=rt_settings.auth)
        if token
        else None
    )
    if row is None:
        session.commit()
        raise SignInFailed("The sign-in has expired or was not started. Start again.")
    if not sessions.csrf_matches(row, request.headers.get(CSRF_HEADER)):
        raise PermissionDenied("The CSRF token does not belong to this sign-in. Start again.")
    return row


# -- sign-in -------------------------------------------------------------------------------


@router.get("/csrf")
def csrf_token(request: Request, response: Response, rt: RuntimeDep) -> CsrfOut:
    """The CSRF token to echo in the X-CSRF-Token header (the sign-in page reads it).

    The same value is in the CSRF cookie; a fresh one is set if the browser has none.
    """
    name = cookie_names(rt.settings.auth).csrf
    value = request.cookies.get(name)
    if not value:
        value = sessions.new_token()
        set_csrf_cookie(response, value, rt.settings)
    return CsrfOut(csrf_token=value)


@router.post("/login")
def login(
    body: LoginIn,
    request: Request,
    response: Response,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> SignInOut:
    """Sign in, step 1: username and password.

    The answer says what comes next: `totp` (send a code to /api/auth/totp), `enrol`
    (scan the QR code, then confirm a code at /api/auth/enrol/confirm). Until then the
    browser holds only a short-lived pre-sign-in cookie that opens nothing else. Any
    failure, including a locked account, answers 401 with the same message.
    """
    with _unit(session):
        step = signin.sign_in_password(
            session,
            crypto=rt.crypto,
            username=body.username,
            password=body.password,
            client=_client(request),
            now=now,
            settings=rt.settings.auth,
        )
    return _hand_out(step, response, rt.settings)


@router.post("/totp")
def second_factor(
    body: TotpIn,
    request: Request,
    response: Response,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> SignInOut:
    """Sign in, step 2: a code from the authenticator app (each code works once) or a
    recovery code (each works once). Next: `password` if a one-time password must be
    changed, else `done` with the session cookie set."""
    with _unit(session):
        pre = _pre_session(request, session, rt.settings, now)
        step = signin.sign_in_second_factor(
            session,
            crypto=rt.crypto,
            pre=pre,
            code=body.code,
            recovery_code=body.recovery_code,
            client=_client(request),
            now=now,
            settings=rt.settings.auth,
        )
    return _hand_out(step, response, rt.settings)


@router.post("/enrol/confirm")
def confirm_enrolment(
    body: CodeIn,
    request: Request,
    response: Response,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> SignInOut:
    """Finish enrolling the authenticator app with a current code. The answer carries ten
    recovery codes, shown only this once: store them safely."""
    with _unit(session):
        pre = _pre_session(request, session, rt.settings, now)
        step = signin.confirm_enrolment(
            session,
            crypto=rt.crypto,
            pre=pre,
            code=body.code,
            client=_client(request),
            now=now,
            settings=rt.settings.auth,
        )
    return _hand_out(step, response, rt.settings)


@router.post("/password")
def change_password(
    body: PasswordIn,
    request: Request,
    response: Response,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> SignInOut:
    """Change the password: while signed in, or as the last sign-in step after a one-time
    password. Every session and API token of the account ends; this browser gets a new
    session."""
    names = cookie_names(rt.settings.auth)
    with _unit(session):
        user: User | None = None
        if request.cookies.get(names.session):
            user = authenticate(request, session, rt, now).user
        else:
            pre = _pre_session(request, session, rt.settings, now)
            user = signin.pre_session_user(session, pre, "password")
        step = signin.change_password(
            session,
            user=user,
            old=body.old,
            new=body.new,
            client=_client(request),
            now=now,
            settings=rt.settings.auth,
        )
    return _hand_out(step, response, rt.settings)


@router.post("/logout", status_code=204)
def logout(
    request: Request, response: Response, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> None:
    """Sign out: the session ends on the server at once."""
    names = cookie_names(rt.settings.auth)
    row: AuthSession | None = None
    if request.cookies.get(names.session):
        caller = authenticate(request, session, rt, now)
        if caller.session is None:
            raise NotAuthenticated("Sign out ends a browser session; revoke API tokens instead.")
        row = caller.session
    else:
        row = _pre_session(request, session, rt.settings, now)
    signin.sign_out(session, row=row, client=_client(request))
    session.commit()
    _delete_cookie(response, names.session, rt.settings)
    _delete_cookie(response, names.preauth, rt.settings)
    response.status_code = 204


@router.get("/me")
def me(caller: CallerDep, session: SessionDep) -> MeOut:
    """The signed-in user, their groups, and how many recovery codes are left."""
    groups = session.execute(
        select(Group.name)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == caller.user.id)
        .order_by(Group.name)
    ).scalars()
    return MeOut(
        user=user_out(caller.user),
        groups=list(groups),
        via="token" if caller.token is not None else "session",
        recovery_codes_left=signin.recovery_codes_left(session, user_id=caller.user.id),
    )


@router.post("/recovery-codes")
def new_recovery_codes(
    body: RecoveryCodesIn,
    caller: CallerDep,
    request: Request,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> RecoveryCodesOut:
    """Replace your recovery codes with ten new ones (the old ones stop working at once).

    Only from a signed-in browser session, with a current code from the authenticator app
    (each works once) or your password; failures count towards the sign-in lockout. The
    codes are shown only in this answer: print or store them."""
    if caller.session is None:
        raise PermissionDenied("Make new recovery codes from a signed-in browser session.")
    with _unit(session):
        codes = signin.new_recovery_codes(
            session,
            crypto=rt.crypto,
            user=caller.user,
            code=body.code.replace(" ", "") if body.code else None,
            password=body.password,
            client=_client(request),
            now=now,
            settings=rt.settings.auth,
        )
    return RecoveryCodesOut(recovery_codes=codes)


# -- own sessions --------------------------------------------------------------------------


@router.get("/sessions")
def list_sessions(
    caller: CallerDep, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> list[SessionOut]:
    """The signed-in user's live sessions; `current` marks this one."""
    rows = sessions.list_for(session, user_id=caller.user.id, now=now, settings=rt.settings.auth)
    current = caller.session.id if caller.session is not None else None
    return [
        SessionOut(
            id=r.id,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            expires_at=r.expires_at,
            client=r.client,
            user_agent=r.user_agent,
            current=r.id == current,
        )
        for r in rows
    ]


@router.delete("/sessions")
def end_other_sessions(
    caller: CallerDep, session: SessionDep, request: Request, now: NowDep
) -> EndedOut:
    """End every session of the signed-in user except this one, and revoke all of the
    user's API tokens (create new ones afterwards if scripts still need them)."""
    keep = caller.session.id if caller.session is not None else None
    ended, revoked = signin.end_other_sessions(
        session, user=caller.user, keep=keep, client=_client(request), now=now
    )
    session.commit()
    return EndedOut(ended=ended, tokens_revoked=revoked)


@router.delete("/sessions/{session_id}")
def end_session(
    session_id: str, caller: CallerDep, session: SessionDep, request: Request
) -> EndedOut:
    """End one of the signed-in user's sessions (ending this one signs out)."""
    ended = sessions.end(session, session_id=session_id, user_id=caller.user.id)
    if not ended:
        raise NotFound("No such session of yours. List them with GET /api/auth/sessions.")
    audit.record(
        session,
        actor=f"user:{caller.user.id}",
        action="auth.end_session",
        target=f"session:{session_id}",
        client=client_address(request),
    )
    session.commit()
    return EndedOut(ended=1)


# -- API tokens ----------------------------------------------------------------------------


def _token_out(row: ApiToken) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        scopes=row.scopes.split(),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


@router.post("/tokens", status_code=201)
def create_token(
    body: TokenIn,
    caller: CallerDep,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    request: Request,
) -> TokenCreatedOut:
    """Create a personal API token for scripts (`Authorization: Bearer <token>`).

    Only from a browser session signed in with password and second factor, never with
    another token. The secret is shown once; scopes: `read` (GET), `write` (changes),
    `admin` (admin routes, for admins).
    """
    if caller.session is None:
        raise PermissionDenied("Create API tokens from a signed-in browser session.")
    if "admin" in body.scopes and not caller.user.is_admin:
        raise PermissionDenied("Only admins can create tokens with the 'admin' scope.")
    secret, row = tokens.create(
        session,
        user_id=caller.user.id,
        name=body.name,
        scopes=list(body.scopes),
        days=body.days,
        max_days=rt.settings.auth.api_token_max_days,
        now=now,
    )
    audit.record(
        session,
        actor=f"user:{caller.user.id}",
        action="token.create",
        target=f"token:{row.id}",
        client=client_address(request),
        details={"scopes": row.scopes, "days": body.days},
    )
    session.commit()
    return TokenCreatedOut(token=secret, info=_token_out(row))


@router.get("/tokens")
def list_tokens(caller: CallerDep, session: SessionDep) -> list[TokenOut]:
    """The signed-in user's API tokens (never their secrets)."""
    return [_token_out(r) for r in tokens.list_for(session, user_id=caller.user.id)]


@router.delete("/tokens/{token_id}")
def revoke_token(
    token_id: str, caller: CallerDep, session: SessionDep, now: NowDep, request: Request
) -> TokenOut:
    """Revoke one of the signed-in user's API tokens; it stops working at once."""
    row = tokens.revoke(session, user_id=caller.user.id, token_id=token_id, now=now)
    audit.record(
        session,
        actor=f"user:{caller.user.id}",
        action="token.revoke",
        target=f"token:{row.id}",
        client=client_address(request),
    )
    session.commit()
    return _token_out(row)
