"""Approval requests: held admin actions that a different admin approves (once) or rejects.

A request stores the exact action: a registered *kind* and its JSON parameters. Approval
flips the status from pending with one conditional UPDATE and runs the kind's executor in the
same transaction, so two admins approving at once run it once, and a failing executor leaves
the request pending. Requests expire (`approvals.expiry_hours`); the requester cannot
approve, and neither can an admin the requester may be acting as (separation of duties,
DESIGN invariant 4: an approver whose current credentials the requester set is the
requester, see `appliance.auth.provenance`), nor the person the request is about.

Other domains register the executors of their kinds once, at import time of their service
module (see `register`). Which kinds need an approval at all is configured in
`approvals.required` (`needs_approval`).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from appliance.approvals.tables import (
    APPROVED,
    EXPIRED,
    PENDING,
    REJECTED,
    STATUSES,
    ApprovalRequest,
)
from appliance.audit import service as audit
from appliance.auth import provenance
from appliance.auth.tables import User
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied

if TYPE_CHECKING:
    from appliance.core.config import Settings
    from appliance.core.runtime import Runtime
    from ingest.index import VectorIndex

Executor = Callable[[Session, dict[str, Any], User, dt.datetime], None]
"""Runs an approved action: ``run(session, params, approver, now)``."""

# Kinds held for approval (the `approvals.required` setting) and what each one is about.
SELF_GRANT_CONFIDENTIAL = "self_grant_confidential"
MAKE_ADMIN = "make_admin"
LIFT_LEGAL_HOLD = "lift_legal_hold"
BULK_DELETE = "bulk_delete"
AUDIT_EXPORT = "audit_export"
SHORTEN_RETENTION = "shorten_retention"
RESET_CREDENTIALS = "reset_credentials"
DELETE_DOCUMENT = "delete_document"
CONSEQUENTIAL = (
    SELF_GRANT_CONFIDENTIAL,
    MAKE_ADMIN,
    LIFT_LEGAL_HOLD,
    BULK_DELETE,
    AUDIT_EXPORT,
    SHORTEN_RETENTION,
    RESET_CREDENTIALS,
    DELETE_DOCUMENT,
)
# Kinds of held action (registered executors) beyond the switches' own names.
ADD_MEMBER = "add_member"
RESET_PASSWORD = "reset_password"  # noqa: S105 - a kind of request, not a secret
RESET_TOTP = "reset_totp"
RETAIN_UNTIL = "retain_until"
ERASE_USER = "erase_user"


@dataclass(frozen=True)
class _Registered:
    run: Executor
    deferred: bool


_registry: dict[str, _Registered] = {}


def register(kind: str, run: Executor, *, deferred: bool = False) -> None:
    """Register the executor of an approval kind (the entry point does, at start-up).

    ``run(session, params, approver, now)`` gets the request's stored parameters exactly as
    they were requested, the approving admin and the approval time. It runs inside the
    approval's transaction: raise an `ApplianceError` to refuse (the request stays pending)
    and do not commit; the approval commits after it returns. Audit the effect as usual
    (`current()` gives the request id and the requester to name in details).

    ``deferred=True`` kinds run nothing at approval: the requester redeems the approval once
    later (`redeem`), e.g. downloading an approved audit export.

    Executors live in the domain that knows how to run the action (a domain above this
    one, so it may call `current()`), and `appliance.wiring.install` registers each of them
    explicitly; nothing is loaded by name. Example (in ``appliance/retention/service.py``)::

        def lift_hold_approved(session, params, approver, now):
            doc = session.get(Document, params["doc_id"])
            ...  # lift it; audit it naming approvals.current().request.id

    and in ``appliance/wiring.py``: ``approvals.register(LIFT_LEGAL_HOLD, lift_hold_approved)``.

    and where the action is asked for::

        if approvals.needs_approval(settings, "lift_legal_hold"):
            req = approvals.request(session=s, kind="lift_legal_hold", target=f"doc:{doc.id}",
                                    params={"doc_id": doc.id}, requester=admin, now=now,
                                    expiry_hours=approvals.expiry_hours(settings))
    """
    existing = _registry.get(kind)
    if existing is not None and existing.run is not run:
        raise ValueError(f"approval kind {kind!r} is registered already")
    if not kind or len(kind) > 40:
        raise ValueError("an approval kind has 1-40 characters")
    _registry[kind] = _Registered(run=run, deferred=deferred)


def kinds() -> list[str]:
    """The registered kinds."""
    return sorted(_registry)


def needs_approval(settings: Settings, kind: str) -> bool:
    """Whether this kind of action is configured to need a second admin's approval."""
    return kind in settings.approvals.required


def expiry_hours(settings: Settings) -> int:
    """Hours a request waits for a decision (`approvals.expiry_hours`, else the acl one)."""
    hours = settings.approvals.expiry_hours
    return hours if hours is not None else settings.acl.approval_expiry_hours


@dataclass(frozen=True)
class ApprovalContext:
    """What an executor may need beyond its arguments, while it runs."""

    request: ApprovalRequest
    requester: User
    approver: User
    now: dt.datetime
    index: VectorIndex | None = None
    runtime: Runtime | None = None

    def need_index(self) -> VectorIndex:
        """The vector index (approvals from the API and CLI always pass one)."""
        if self.index is not None:
            return self.index
        if self.runtime is not None:
            return self.runtime.index()
        raise InvalidInput("This approval needs the vector index; approve it from the API.")


_current: contextvars.ContextVar[ApprovalContext | None] = contextvars.ContextVar(
    "approval", default=None
)


def current() -> ApprovalContext:
    """The approval whose executor is running now (only valid inside an executor)."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("approvals.current() called outside an approval executor")
    return ctx


@contextmanager
def _running(ctx: ApprovalContext) -> Iterator[None]:
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)


def params_of(req: ApprovalRequest) -> dict[str, Any]:
    """The stored parameters of a request's action."""
    value: dict[str, Any] = json.loads(req.params)
    return value


def _canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def request(
    *,
    session: Session,
    kind: str,
    params: dict[str, Any],
    requester: User,
    now: dt.datetime,
    expiry_hours: int,
    doc_id: str | None = None,
    target: str | None = None,
    reason: str | None = None,
    audit_details: dict[str, Any] | None = None,
) -> ApprovalRequest:
    """Hold an action for approval (the same pending action is not requested twice); audited.

    With ``audit_details`` (added to the entry, e.g. why the action was held) a repeated
    request is audited too, as ``approval.request_again``: every held attempt leaves a trace.
    """
    if kind not in _registry:
        raise InvalidInput(f"Unknown kind of request {kind!r}. Kinds: {', '.join(kinds())}.")
    canonical = _canonical(params)
    if target is None and doc_id is not None:
        target = f"doc:{doc_id}"
    existing = session.execute(
        select(ApprovalRequest).where(
            ApprovalRequest.doc_id == doc_id
            if doc_id is not None
            else ApprovalRequest.target == target,
            ApprovalRequest.requester_id == requester.id,
            ApprovalRequest.kind == kind,
            ApprovalRequest.params == canonical,
            ApprovalRequest.status == PENDING,
            ApprovalRequest.expires_at > now,
        )
    ).scalar_one_or_none()
    if existing is not None:
        if audit_details:
            _audit_request(
                session, existing, params, audit_details, action="approval.request_again"
            )
        return existing
    req = ApprovalRequest(
        doc_id=doc_id,
        target=target,
        requester_id=requester.id,
        kind=kind,
        params=canonical,
        reason=reason,
        status=PENDING,
        created_at=now,
        expires_at=now + dt.timedelta(hours=expiry_hours),
    )
    session.add(req)
    session.flush()
    _audit_request(session, req, params, audit_details)
    return req


def _audit_request(
    session: Session,
    req: ApprovalRequest,
    params: dict[str, Any],
    extra: dict[str, Any] | None,
    *,
    action: str = "approval.request",
) -> None:
    details: dict[str, Any] = {"kind": req.kind, "params": params, "for": req.target}
    if req.doc_id is not None:
        details["doc"] = req.doc_id
    details.update(extra or {})
    audit.record(
        session,
        actor=f"user:{req.requester_id}",
        action=action,
        target=f"approval:{req.id}",
        details=details,
    )


def expire_due(session: Session, *, now: dt.datetime) -> int:
    """Mark pending requests past their expiry as expired (audited); returns how many."""
    due = list(
        session.execute(
            select(ApprovalRequest).where(
                ApprovalRequest.status == PENDING, ApprovalRequest.expires_at <= now
            )
        ).scalars()
    )
    for req in due:
        req.status = EXPIRED
        req.decided_at = now
        audit.record(
            session,
            actor="system:approvals",
            action="approval.expire",
            target=f"approval:{req.id}",
            details={"kind": req.kind},
        )
    session.flush()
    return len(due)


def list_requests(
    session: Session, *, now: dt.datetime, status: str | None = None
) -> list[ApprovalRequest]:
    """Requests, newest first (expired ones marked as such first)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"The status is one of {', '.join(STATUSES)}.")
    expire_due(session, now=now)
    session.commit()
    query = select(ApprovalRequest).order_by(ApprovalRequest.created_at.desc())
    if status is not None:
        query = query.where(ApprovalRequest.status == status)
    return list(session.execute(query).scalars())


def get_request(session: Session, request_id: str) -> ApprovalRequest:
    """One request, or NotFound."""
    req = session.get(ApprovalRequest, request_id)
    if req is None:
        raise NotFound(
            "No such approval request. List them with GET /api/admin/approvals "
            "or `appliance approvals list`."
        )
    return req


def _decidable(session: Session, req: ApprovalRequest, decider: User, now: dt.datetime) -> None:
    if not decider.is_admin or not decider.is_active:
        raise PermissionDenied("Only an active admin decides approval requests.")
    if req.status == PENDING and req.expires_at <= now:
        expire_due(session, now=now)
        session.commit()
    if req.status != PENDING:
        raise InvalidInput(f"This request is {req.status} already; it cannot be decided again.")


def subjects(session: Session, req: ApprovalRequest) -> list[User]:
    """The accounts a request is about: its target user, or the user its action names."""
    params = params_of(req)
    ids = [
        value.removeprefix("user:")
        for value in (req.target, params.get("principal"))
        if isinstance(value, str) and value.startswith("user:")
    ]
    ids += [v for v in (params.get("user_id"), params.get("transfer_to")) if isinstance(v, str)]
    found = (session.get(User, uid) for uid in dict.fromkeys(ids))
    return [u for u in found if u is not None]


def _refuse_same_person(
    session: Session, req: ApprovalRequest, *, requester: User, approver: User
) -> None:
    """Four eyes are two people: not the requester in another account, nor the subject."""
    reason = None
    if provenance.same_person(session, approver, requester):
        reason = "requester_controls_approver"
        message = (
            "You cannot approve this request: your account's credentials were set or reset "
            f"by {requester.username} (or one they control), so they could approve as you. "
            "Another admin must decide; change your password and have your second factor "
            "reset by someone else to end this."
        )
    elif any(provenance.same_person(session, approver, who) for who in subjects(session, req)):
        reason = "approver_is_subject"
        message = (
            "You cannot approve this request: it is about your own account (or one whose "
            "credentials you set). Another admin must decide."
        )
    if reason is None:
        return
    audit.record(
        session,
        actor=approver.principal,
        action="approval.self_approve",
        target=f"approval:{req.id}",
        outcome="refused",
        details={"kind": req.kind, "reason": reason, "requester": requester.principal},
    )
    session.commit()
    raise PermissionDenied(message)


def approve(
    *,
    session: Session,
    request_id: str,
    approver: User,
    now: dt.datetime,
    index: VectorIndex | None = None,
    runtime: Runtime | None = None,
) -> ApprovalRequest:
    """Approve another admin's request and run its action, exactly once; audited."""
    req = get_request(session, request_id)
    if req.requester_id == approver.id:
        audit.record(
            session,
            actor=approver.principal,
            action="approval.self_approve",
            target=f"approval:{req.id}",
            outcome="refused",
            details={"kind": req.kind, "reason": "own_request"},
        )
        session.commit()
        raise PermissionDenied("You cannot approve your own request; another admin must.")
    _decidable(session, req, approver, now)
    requester = session.get(User, req.requester_id)
    if requester is None:
        raise NotFound("The admin who made this request no longer exists.")
    _refuse_same_person(session, req, requester=requester, approver=approver)
    if not (requester.is_admin and requester.is_active):
        # The action would run in their name: it needs an admin now, not when they asked.
        raise PermissionDenied(
            f"{requester.username} is no longer an active admin, so their request cannot run; "
            "reject it."
        )
    registered = _registry.get(req.kind)
    if registered is None:
        raise InvalidInput(
            f"No executor is registered for requests of kind {req.kind!r}; "
            "this appliance version cannot run it. Reject it instead."
        )
    claimed = session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == req.id, ApprovalRequest.status == PENDING)
        .values(
            status=APPROVED,
            decided_by=approver.id,
            decided_at=now,
            executed_at=None if registered.deferred else now,
        )
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise InvalidInput("This request was decided by someone else meanwhile.")
    audit.record(
        session,
        actor=approver.principal,
        action="approval.approve",
        target=f"approval:{req.id}",
        details={
            "doc": req.doc_id,
            "kind": req.kind,
            "for": req.target,
            "requester": requester.principal,
        },
    )
    if not registered.deferred:
        ctx = ApprovalContext(
            request=req,
            requester=requester,
            approver=approver,
            now=now,
            index=index,
            runtime=runtime,
        )
        try:
            with _running(ctx):
                registered.run(session, params_of(req), approver, now)
        except Exception:
            session.rollback()  # the request stays pending: nothing ran
            raise
    session.commit()
    session.refresh(req)
    return req


def redeem(
    *, session: Session, request_id: str, kind: str, user: User, now: dt.datetime
) -> ApprovalRequest:
    """Use an approved deferred request once (its requester, before it expires); audited."""
    req = get_request(session, request_id)
    if req.kind != kind:
        raise InvalidInput(f"Approval request {req.id} is for {req.kind!r}, not {kind!r}.")
    if req.requester_id != user.id:
        raise PermissionDenied("Only the admin who asked for this approval can use it.")
    if req.status != APPROVED:
        raise PermissionDenied(
            f"This request is {req.status}; it needs a second admin's approval before use."
        )
    if req.expires_at <= now:
        raise PermissionDenied("This approval has expired. Ask for a new one.")
    used = session.execute(
        update(ApprovalRequest)
        .where(
            ApprovalRequest.id == req.id,
            ApprovalRequest.status == APPROVED,
            ApprovalRequest.executed_at.is_(None),
        )
        .values(executed_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise PermissionDenied("This approval was used already; each one is good for once.")
    audit.record(
        session,
        actor=user.principal,
        action="approval.redeem",
        target=f"approval:{req.id}",
        details={"kind": req.kind},
    )
    session.flush()
    session.refresh(req)
    return req


def reject(
    *, session: Session, request_id: str, decider: User, now: dt.datetime
) -> ApprovalRequest:
    """Reject a request (the requester may withdraw their own); audited."""
    req = get_request(session, request_id)
    _decidable(session, req, decider, now)
    claimed = session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == req.id, ApprovalRequest.status == PENDING)
        .values(status=REJECTED, decided_by=decider.id, decided_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise InvalidInput("This request was decided by someone else meanwhile.")
    audit.record(
        session,
        actor=decider.principal,
        action="approval.reject",
        target=f"approval:{req.id}",
        details={"doc": req.doc_id, "kind": req.kind, "for": req.target},
    )
    session.commit()
    session.refresh(req)
    return req


SECOND_ADMIN_HOW = (
    "Someone with shell access to the server creates one with "
    "`appliance users create NAME --admin`; once that admin has signed in (and enrolled "
    "an authenticator), they can approve."
)


def other_approvers(session: Session, requester: User) -> list[User]:
    """The other active admins: the people who could approve this admin's requests."""
    rows = session.execute(
        select(User).where(User.role == "admin", User.is_active.is_(True), User.id != requester.id)
    ).scalars()
    return list(rows)


def second_admin_note(session: Session, requester: User, *, general: bool = False) -> str | None:
    """Why a held action of this admin cannot be finished yet, and how to fix it; or None.

    None while another active admin who has signed in (enrolled a second factor) exists.
    ``general`` words it for a page rather than for one request.
    """
    others = other_approvers(session, requester)
    if any(u.totp_enrolled for u in others):
        return None
    lead = (
        "Two-person actions (making an admin, lifting a legal hold, exporting the audit "
        "log, ...) wait here for a second admin"
        if general
        else "A second admin must approve this"
    )
    if others:
        names = ", ".join(sorted(u.username for u in others))
        verb = "has" if len(others) == 1 else "have"
        return (
            f"{lead}, and no other admin can yet: {names} {verb} not finished signing in "
            "for the first time. They can approve once they have."
        )
    return f"{lead}, but you are the only active admin, so nobody can approve yet. " + (
        SECOND_ADMIN_HOW
    )
