"""HTTP API for the audit log: search it, and export it (JSON lines or CSV) with approval."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from appliance.admin.routes import object_label
from appliance.approvals import service as approvals
from appliance.approvals.routes import shaped
from appliance.approvals.schemas import ApprovalRequestOut
from appliance.audit import query as audit_query
from appliance.audit import service
from appliance.audit.schemas import (
    AuditEntryOut,
    AuditPageOut,
    CheckpointBody,
    DetailField,
    ExportRequestIn,
    VerifyIn,
    VerifyOut,
)
from appliance.auth import service as users
from appliance.auth.tables import User
from appliance.core.errors import PermissionDenied
from appliance.core.runtime import Runtime
from appliance.deps import (
    AdminUser,
    NowDep,
    RuntimeDep,
    SessionDep,
    admin_user,
    client_address,
    protected_router,
)

router = protected_router(
    prefix="/api/admin/audit", tags=["audit"], dependencies=[Depends(admin_user)]
)

Since = Annotated[
    dt.datetime | None, Query(alias="from", description="Entries at or after this time (UTC).")
]
Until = Annotated[dt.datetime | None, Query(alias="to", description="Entries before this time.")]
ActorQ = Annotated[
    str | None,
    Query(max_length=128, description="Who: user:<id>, operator:<name>, system..., or a username."),
]
ActionQ = Annotated[
    str | None,
    Query(max_length=64, description="What: 'auth' matches auth.*; 'auth.log*' is a prefix."),
]
TargetQ = Annotated[str | None, Query(max_length=128, description="On what, e.g. doc:<id>.")]
OutcomeQ = Annotated[str | None, Query(max_length=16, description="ok, denied, refused, ...")]


def resolve_actor(session: Session, actor: str | None) -> str | None:
    """A principal as stored: ``user:<id>`` for a username, anything with ':' as given."""
    if actor is None or ":" in actor or actor in ("system", "anonymous"):
        return actor
    return users.get_user_by_name(session, actor).principal


def _filters(
    session: Session,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    actor: str | None,
    action: str | None,
    target: str | None,
    outcome: str | None,
) -> audit_query.Filters:
    return audit_query.Filters(
        since=since,
        until=until,
        actor=resolve_actor(session, actor),
        action=action,
        target=target,
        outcome=outcome,
    )


_DOC_KEYS = ("doc", "doc_id", "document")
_ID_KINDS = {"user_id": "user", "transfer_to": "user", "group_id": "group"}
# Detail keys whose bare name says little; the rest read as their own words.
_DETAIL_LABELS = {
    "window": "Searched the newest entries",
    "returned": "Entries returned",
    "cursor": "Older than entry",
    "for": "About",
    "doc": "Document",
    "held": "Held action",
    "why": "Why held",
    "before": "Before",
    "after": "After",
}
_LIST_SHOWN = 8


def _readable(session: Session, rt: Runtime, viewer: User, key: str, value: Any) -> str:
    """A detail value in words: principals and documents by the names the viewer may see."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        ref = value
        if ":" not in value and key in _DOC_KEYS:
            ref = f"doc:{value}"
        elif ":" not in value and key in _ID_KINDS:
            ref = f"{_ID_KINDS[key]}:{value}"
        label = object_label(session, rt.crypto, viewer, ref) if ":" in ref else None
        return label.text if label is not None else value
    if isinstance(value, list):
        shown = [_readable(session, rt, viewer, key, v) for v in value[:_LIST_SHOWN]]
        more = len(value) - len(shown)
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "") or "none"
    if isinstance(value, dict):
        return "; ".join(
            f"{k.replace('_', ' ')}: {_readable(session, rt, viewer, k, v)}"
            for k, v in value.items()
            if v is not None
        )
    return str(value)


def _entry_out(
    session: Session, rt: Runtime, viewer: User, entry: audit_query.Entry
) -> AuditEntryOut:
    """An entry with names instead of ids: its actor, target and details."""
    target = object_label(session, rt.crypto, viewer, entry.target)
    actor = object_label(session, rt.crypto, viewer, entry.actor)
    fields = [
        DetailField(
            label=_DETAIL_LABELS.get(key, key.replace("_", " ").capitalize()),
            value=_readable(session, rt, viewer, key, value),
        )
        for key, value in entry.details.items()
        if value is not None and value != [] and value != {}
    ]
    return AuditEntryOut.of(
        entry,
        target_name=target.text if target is not None else entry.target_name,
        target_href=target.href if target is not None else None,
        actor_href=actor.href if actor is not None and entry.actor.startswith("user:") else None,
        fields=fields,
    )


RECENT_WITHOUT_APPROVAL = 500
"""Entries an admin may search without a second admin (the rest follows the export rule)."""


@router.get("")
def search_audit(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    since: Since = None,
    until: Until = None,
    actor: ActorQ = None,
    action: ActionQ = None,
    target: TargetQ = None,
    outcome: OutcomeQ = None,
    cursor: Annotated[
        int | None, Query(ge=0, le=2**62, description="next_cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=audit_query.MAX_PAGE)] = 100,
    newest_first: bool = True,
) -> AuditPageOut:
    """Search the audit log by time, actor, action, target and outcome, one page at a time.

    Erased users appear as `erased-user-...` pseudonyms in `actor_name`, never by name.
    Every search is itself audited. While `audit_export` needs approval, a search covers
    the newest 500 entries of the log (any filters); reading further back follows the
    export's rule: ask a second admin with `POST /api/admin/audit/export-requests`.
    """
    filters = _filters(
        session,
        since=since,
        until=until,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
    )
    held = approvals.needs_approval(rt.settings, approvals.AUDIT_EXPORT)
    page = audit_query.search(
        session,
        filters=filters,
        limit=limit,
        cursor=cursor,
        newest_first=newest_first,
        crypto=rt.crypto,
        recent=RECENT_WITHOUT_APPROVAL if held else None,
    )
    service.record(
        session,
        actor=admin.principal,
        action="audit.search",
        target="audit",
        client=client_address(request),
        details={
            "filters": filters.to_json(),
            "cursor": cursor,
            "returned": len(page.entries),
            "window": RECENT_WITHOUT_APPROVAL if held else None,
        },
    )
    session.commit()
    return AuditPageOut(
        entries=[_entry_out(session, rt, admin, e) for e in page.entries],
        next_cursor=page.next_cursor,
    )


def _stream(
    rt: Runtime, filters: audit_query.Filters, fmt: str, cp: service.Checkpoint
) -> StreamingResponse:
    def body() -> Iterator[str]:
        with rt.sessions() as session:
            yield from audit_query.export_lines(
                session, filters=filters, fmt=fmt, cp=cp, crypto=rt.crypto
            )

    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(
        body(),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="audit-{cp.head_id}.{fmt}"',
            "X-Audit-Checkpoint": cp.to_json(),
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "JSON lines (the signed checkpoint first, then one entry per line) or CSV "
                "(cells that a spreadsheet would run as a formula start with a quote). The "
                "checkpoint is also in the X-Audit-Checkpoint header."
            ),
            "content": {"application/x-ndjson": {}, "text/csv": {}},
        }
    },
)
def export_audit(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    format: Literal["jsonl", "csv"] = "jsonl",
    since: Since = None,
    until: Until = None,
    actor: ActorQ = None,
    action: ActionQ = None,
    target: TargetQ = None,
    outcome: OutcomeQ = None,
    approval: Annotated[
        str | None,
        Query(max_length=32, description="An approved export request of yours (used once)."),
    ] = None,
) -> StreamingResponse:
    """Download the audit log, with a signed checkpoint of its head; the export is audited.

    Exporting needs a second admin's approval unless `approvals.required` leaves
    `audit_export` out: ask with `POST /api/admin/audit/export-requests`, and once another
    admin approved, download once with `?approval=<id>` (the request's stored format and
    filters apply, not this URL's).
    """
    approval_id = None
    if approval is not None:
        req = approvals.redeem(
            session=session,
            request_id=approval,
            kind=approvals.AUDIT_EXPORT,
            user=admin,
            now=now,
        )
        stored = approvals.params_of(req)
        fmt = str(stored.get("format", "jsonl"))
        filters = audit_query.Filters.from_json(stored.get("filters", {}))
        approval_id = req.id
    elif approvals.needs_approval(rt.settings, approvals.AUDIT_EXPORT):
        raise PermissionDenied(
            "Exporting the audit log needs a second admin's approval. Ask with POST "
            "/api/admin/audit/export-requests; once approved, download with ?approval=<id>."
        )
    else:
        fmt = format
        filters = _filters(
            session,
            since=since,
            until=until,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
        )
    cp = audit_query.start_export(
        session,
        filters=filters,
        fmt=fmt,
        actor=admin.principal,
        crypto=rt.crypto,
        client=client_address(request),
        approval_id=approval_id,
        now=now,
    )
    return _stream(rt, filters, fmt, cp)


@router.post(
    "/export-requests",
    status_code=202,
    responses={202: {"description": "The export request, waiting for a second admin."}},
)
def request_export(
    body: ExportRequestIn, admin: AdminUser, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> ApprovalRequestOut:
    """Ask a second admin to approve an audit export with exactly these format and filters.

    Once approved, download it once with `GET /api/admin/audit/export?approval=<id>`.
    """
    filters = _filters(
        session,
        since=body.since,
        until=body.until,
        actor=body.actor,
        action=body.action,
        target=body.target,
        outcome=body.outcome,
    )
    req = approvals.request(
        session=session,
        kind=approvals.AUDIT_EXPORT,
        target="audit",
        params={"format": body.format, "filters": filters.to_json()},
        requester=admin,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        reason=body.reason,
    )
    session.commit()
    return shaped(session, rt, admin, req)


@router.get("/checkpoint")
def get_checkpoint(
    request: Request, admin: AdminUser, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> CheckpointBody:
    """A signed checkpoint of the chain's head, for you to keep off this server (audited).

    Later, `POST /api/admin/audit/verify` with it (or `appliance audit verify --checkpoint`)
    shows whether any entry up to that head was removed, the newest ones included.
    """
    service.record(
        session,
        actor=admin.principal,
        action="audit.checkpoint",
        target="audit",
        client=client_address(request),
    )
    session.commit()
    cp = service.checkpoint(session, crypto=rt.crypto, now=now)
    return CheckpointBody(**dataclasses.asdict(cp))


@router.post("/verify")
def verify_chain(body: VerifyIn, session: SessionDep, rt: RuntimeDep) -> VerifyOut:
    """Check the hash chain (and, given a checkpoint, that its head is still there).

    A checkpoint whose signature does not match is refused (422): it was edited or forged.
    """
    cp = None
    if body.checkpoint is not None:
        cp = service.Checkpoint(**body.checkpoint.model_dump())
        service.check_checkpoint(cp, crypto=rt.crypto)
    result = service.verify(session, checkpoint=cp)
    return VerifyOut(
        ok=result.ok,
        entries=result.entries,
        pruned=result.pruned,
        head=result.head,
        head_id=result.head_id,
        problem=result.problem,
        at_id=result.at_id,
    )
