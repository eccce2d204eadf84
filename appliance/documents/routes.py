"""HTTP API for the document library: list, upload, view, download, grants, delete, approvals.

A document the caller may not read answers 404 "not found" on every route, exactly as a
document that does not exist (never 403, which would confirm that it exists).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePath
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Query, Request, Response
from fastapi import Path as FastApiPath
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from appliance.acl import rules
from appliance.acl import service as acl
from appliance.acl.principals import (
    describe_principal,
    principal_names,
    principals_for,
    resolve_name,
)
from appliance.approvals import service as approvals
from appliance.approvals.schemas import ApprovalRequestOut, approval_out
from appliance.audit import service as audit
from appliance.auth import service as users
from appliance.auth.tables import User
from appliance.core import places
from appliance.core.classification import CLASSIFICATIONS, Classification
from appliance.core.errors import InvalidInput, NotFound, PayloadTooLarge
from appliance.core.places import DOC_KEY
from appliance.core.runtime import Runtime
from appliance.deps import (
    AdminUser,
    CallerDep,
    CurrentUser,
    ManagedDocument,
    NowDep,
    ReadableDocument,
    RuntimeDep,
    SessionDep,
    VisibleDocument,
    admin_user,
    client_address,
    managed_document,
    protected_router,
)
from appliance.documents import service as docs
from appliance.documents.schemas import (
    ApprovalIn,
    ChangeOut,
    ClassifyIn,
    DocumentListOut,
    DocumentOut,
    GrantIn,
    GrantOut,
    ListedState,
    PassageOut,
    PrincipalNameOut,
    UploadOut,
)
from appliance.documents.tables import Chunk, Document, DocumentGrant
from appliance.documents.upload import receive

# Quiet validation: a 422 names the field and the reason, never the value that was sent.
router = protected_router(prefix="/api", tags=["documents"])
# Requesting an approval for a document action lives here, beside the document checks it
# needs; listing and deciding requests is the approvals domain's /api/admin/approvals.
approvals_router = protected_router(
    prefix="/admin/approvals",
    tags=["approvals"],
    dependencies=[Depends(admin_user)],
)
MAX_GRANTS_AT_UPLOAD = 50


# -- shaping -----------------------------------------------------------------------------


def _shared_with(
    session: Session, doc: Document, manages: bool, principals: list[str]
) -> list[str]:
    """Who may read it, by name: every grant for those who manage it (the Access dialog
    shows them the same); for a reader only the grants that are their own way in."""
    granted = session.execute(
        select(DocumentGrant.principal)
        .where(DocumentGrant.doc_id == doc.id)
        .order_by(DocumentGrant.created_at, DocumentGrant.principal)
    ).scalars()
    mine = set(principals)
    return [describe_principal(session, p) for p in granted if manages or p in mine]


def _doc_out(
    rt: Runtime,
    session: Session,
    user: User,
    doc: Document,
    principals: list[str] | None = None,
) -> DocumentOut:
    # Names are content (a text file's title is its first line): an admin who manages a
    # document by role alone, without being able to read it, sees neither (invariant 4).
    named = rules.can_see(session, user, doc)
    manages = rules.can_manage(session, user, doc)
    if principals is None:
        principals = principals_for(session, user)
    return DocumentOut(
        id=doc.id,
        filename=docs.filename_of(rt.crypto, doc) if named else None,
        title=docs.title_of(rt.crypto, doc) if named else None,
        classification=doc.classification,
        state=doc.state,
        pages=doc.pages,
        chunks_total=doc.chunks_total,
        chunks_done=doc.chunks_done,
        error_reason=doc.error_reason,
        size_bytes=doc.size_bytes,
        created_at=doc.created_at,
        indexed_at=doc.indexed_at,
        yours=doc.owner_id == user.id,
        can_manage=manages,
        shared_with=_shared_with(session, doc, manages, principals),
    )


def _grants_out(session: Session, doc_id: str) -> list[GrantOut]:
    rows = session.execute(
        select(DocumentGrant)
        .where(DocumentGrant.doc_id == doc_id)
        .order_by(DocumentGrant.created_at, DocumentGrant.principal)
    ).scalars()
    return [
        GrantOut(
            principal=g.principal,
            name=describe_principal(session, g.principal),
            level=g.level,
            granted_by=g.granted_by,
            created_at=g.created_at,
        )
        for g in rows
    ]


def _change(
    session: Session, doc_id: str, held: acl.Held | None, changed: bool, response: Response
) -> ChangeOut:
    if held is not None:
        response.status_code = 202
        return ChangeOut(status="approval_required", approval=approval_out(session, held.request))
    return ChangeOut(status="done" if changed else "unchanged", grants=_grants_out(session, doc_id))


# -- the library -------------------------------------------------------------------------


@router.get("/documents")
def list_documents(
    user: CurrentUser,
    session: SessionDep,
    rt: RuntimeDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Part of the filename or title.")
    ] = None,
    state: ListedState | None = None,
    classification: Classification | None = None,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DocumentListOut:
    """Your library: the documents you may read, and your own uploads still in progress.

    Search matches part of the filename or title; filters narrow by state and classification.
    Counts cover only documents you may see. Progress shows in `state`, `chunks_done` of
    `chunks_total`, and `error_reason` when ingestion failed.
    """
    principals = principals_for(session, user)
    rows = list(
        session.execute(
            rules.visible_documents_query(principals).order_by(
                Document.created_at.desc(), Document.id
            )
        ).scalars()
    )
    if q:
        needle = q.casefold()
        rows = [
            d
            for d in rows
            if needle in docs.filename_of(rt.crypto, d).casefold()
            or needle in (docs.title_of(rt.crypto, d) or "").casefold()
        ]
    by_state: dict[str, int] = {}
    by_classification: dict[str, int] = {}
    for d in rows:
        by_state[d.state] = by_state.get(d.state, 0) + 1
        by_classification[d.classification] = by_classification.get(d.classification, 0) + 1
    matching = [
        d
        for d in rows
        if (state is None or d.state == state)
        and (classification is None or d.classification == classification)
    ]
    size = min(limit or rt.settings.acl.list_page_size, rt.settings.acl.list_page_size)
    page = matching[offset : offset + size]
    return DocumentListOut(
        total=len(matching),
        by_state=by_state,
        by_classification=by_classification,
        documents=[_doc_out(rt, session, user, d, principals) for d in page],
    )


@router.get("/documents/{doc_id}")
def get_document(
    doc: VisibleDocument, user: CurrentUser, session: SessionDep, rt: RuntimeDep
) -> DocumentOut:
    """A document's metadata and ingestion progress; 404 unless you may see it."""
    return _doc_out(rt, session, user, doc)


@router.get(
    "/documents/{doc_id}/download",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download(
    doc: ReadableDocument, request: Request, user: CurrentUser, session: SessionDep, rt: RuntimeDep
) -> Response:
    """The original file, decrypted, as an attachment; 404 unless you may read it."""
    try:
        blob = rt.blobs.get(doc.id)
    except FileNotFoundError as exc:
        raise NotFound("The stored file is missing. Ask an administrator to check.") from exc
    data = rt.crypto.decrypt(DOC_KEY, doc.id, places.DOC_BLOB, blob)
    filename = docs.filename_of(rt.crypto, doc)
    fallback = "".join(c if c.isascii() and c.isalnum() or c in "._-" else "_" for c in filename)
    audit.record(
        session,
        actor=user.principal,
        action="document.download",
        target=f"doc:{doc.id}",
        client=client_address(request),
    )
    session.commit()
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": (
                f'attachment; filename="{fallback or "document"}"; '
                f"filename*=UTF-8''{quote(filename, safe='')}"
            ),
            "Cache-Control": "no-store",
        },
    )


@router.get("/documents/{doc_id}/chunks/{chunk_no}")
def passage(
    doc: ReadableDocument,
    chunk_no: Annotated[int, FastApiPath(ge=0, le=1_000_000)],
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    rt: RuntimeDep,
) -> PassageOut:
    """One passage of a document (a citation's preview); 404 unless you may read it.

    Audited the first time each session or API token reads each passage."""
    chunk = session.execute(
        select(Chunk).where(Chunk.doc_id == doc.id, Chunk.chunk_no == chunk_no)
    ).scalar_one_or_none()
    if chunk is None:
        raise NotFound("This document has no such passage.")
    via = (
        f"session:{caller.session.id}"
        if caller.session is not None
        else f"token:{caller.token.id}"
        if caller.token is not None
        else caller.user.principal
    )
    if docs.record_passage_read(
        session=session,
        actor=caller.user.principal,
        via=via,
        doc_id=doc.id,
        chunk_no=chunk.chunk_no,
        client=client_address(request),
    ):
        session.commit()
    return PassageOut(
        doc_id=doc.id,
        chunk_no=chunk.chunk_no,
        page=chunk.page,
        heading=rt.crypto.decrypt_text(
            DOC_KEY, doc.id, places.chunk_heading(chunk.chunk_no), chunk.heading_ct
        )
        if chunk.heading_ct
        else None,
        text=rt.crypto.decrypt_text(
            DOC_KEY, doc.id, places.chunk_text(chunk.chunk_no), chunk.text_ct
        ),
    )


UPLOAD_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "grants": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Who may read it: user:NAME, group:NAME, everyone.",
                        },
                        "classification": {
                            "type": "string",
                            "enum": list(CLASSIFICATIONS),
                        },
                        "as_new": {
                            "type": "string",
                            "enum": ["true", "false"],
                            "description": "true: store it even if you uploaded the same "
                            "file before (a new version), instead of answering `duplicate`.",
                        },
                    },
                }
            }
        },
    }
}


def _upload_dir() -> Path:
    # The plaintext waits for encryption in a private directory, in memory when possible.
    shm = Path("/dev/shm")  # noqa: S108 - a private 0700 directory is created inside
    root = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="appliance-upload-", dir=root))


@router.post(
    "/documents",
    status_code=202,
    openapi_extra=UPLOAD_SCHEMA,
    responses={200: {"model": UploadOut, "description": "Already in your library."}},
)
async def upload(
    request: Request, response: Response, user: CurrentUser, rt: RuntimeDep
) -> UploadOut:
    """Upload a file (multipart: `file`, optional `grants`, `classification`, `as_new`).

    You own it and may manage it; `grants` name who else may read it (user:NAME,
    group:NAME, everyone, or a bare name that only one user or group has). The worker
    ingests it in the background: follow `state` and `chunks_done` with
    GET /api/documents/{id}. A file over the size limit is refused with 413 before anything
    is stored. The same file uploaded by you before answers 200 with `duplicate: true` and
    that document, unchanged: its sharing and classification stay as they were (change them
    with the grants and classification routes, or send `as_new=true` to store a new copy).
    """
    limit = rt.settings.max_upload_bytes
    too_large = PayloadTooLarge(
        f"The file is over the {limit // 1048576} MiB limit. Split it, or ask an administrator "
        "to raise the setting ingest.max_upload_mb."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:  # multipart framing
        raise too_large
    tmp = _upload_dir()
    try:
        received = await receive(
            request.headers.get("content-type", ""),
            request.stream(),
            dest=tmp,
            limit=limit,
            max_fields=MAX_GRANTS_AT_UPLOAD + 1,
            too_large=too_large,
        )
        grants = [g for g in received.fields.get("grants", []) if g.strip()]
        classifications = received.fields.get("classification", [])
        if len(classifications) > 1:
            raise InvalidInput("Send one classification.")
        as_new = received.fields.get("as_new", ["false"])
        if len(as_new) > 1 or as_new[0] not in ("true", "false"):
            raise InvalidInput("Send as_new once, as true or false.")
        filename = PurePath(received.filename.replace("\\", "/")).name[:255]
        out = await run_in_threadpool(
            _submit,
            rt,
            user.id,
            received.path,
            filename or "upload",
            grants,
            classifications[0] if classifications else None,
            as_new[0] == "true",
        )
        if out.duplicate:
            response.status_code = 200
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _submit(
    rt: Runtime,
    user_id: str,
    path: Path,
    filename: str,
    grants: list[str],
    classification: str | None,
    as_new: bool,
) -> UploadOut:
    with rt.sessions() as session:
        user = users.get_user(session, user_id)
        principals = [resolve_name(session, g) for g in grants]
        with docs.submit_lock:
            result = docs.submit_file(
                session=session,
                crypto=rt.crypto,
                blobs=rt.blobs,
                path=path,
                filename=filename,
                owner=user,
                grants=principals,
                classification=classification or rt.settings.ingest.default_classification,
                max_bytes=rt.settings.max_upload_bytes,
                actor=user.principal,
                as_new=as_new,
            )
            session.commit()
        out = _doc_out(rt, session, user, result.document)
        return UploadOut(**out.model_dump(), duplicate=result.duplicate)


@router.post("/documents/{doc_id}/retry", status_code=202)
def retry_upload(
    doc: ManagedDocument, user: CurrentUser, session: SessionDep, rt: RuntimeDep
) -> DocumentOut:
    """Queue a failed upload again from the file stored (encrypted) when it was uploaded.

    422 when nothing was stored (an empty file, one over the limit): pick the file again.
    """
    docs.retry(session=session, blobs=rt.blobs, doc=doc, actor=user.principal)
    session.commit()
    return _doc_out(rt, session, user, doc)


@router.get("/principals")
def list_principal_names(
    user: CurrentUser,
    session: SessionDep,
    q: Annotated[str, Query(max_length=64, description="The start of a name.")] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[PrincipalNameOut]:
    """Names to share with: active usernames and group names starting with `q`.

    Names only (no ids, roles or memberships), for any signed-in user: the sharing fields'
    suggestions. Grant with the bare name when only one user or group has it, else with
    user:NAME or group:NAME; `everyone` is always possible.
    """
    return [
        PrincipalNameOut(kind=kind, name=name)  # type: ignore[arg-type]
        for kind, name in principal_names(session, prefix=q, limit=limit)
    ]


# -- access ------------------------------------------------------------------------------


@router.get("/documents/{doc_id}/grants")
def list_grants(doc: ManagedDocument, user: CurrentUser, session: SessionDep) -> list[GrantOut]:
    """Who may read or manage a document; needs `manage` on it (or the admin role)."""
    return _grants_out(session, doc.id)


@router.post("/documents/{doc_id}/grants", responses={202: {"model": ChangeOut}})
def add_grant(
    doc: ManagedDocument,
    body: GrantIn,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> ChangeOut:
    """Give a user, a group or everyone `read` or `manage`; it applies to the next search.

    An admin giving themselves (or a group they are in, or everyone) `read` on a
    confidential or personal document answers 202 with an approval request: a second
    admin must approve it before it takes effect.
    """
    principal = resolve_name(session, body.principal)
    before = _grants_out(session, doc.id)
    held = acl.grant(
        session=session,
        index=rt.index(),
        doc=doc,
        principal=principal,
        level=body.level,
        actor=user,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        hold_self_grants=approvals.needs_approval(rt.settings, approvals.SELF_GRANT_CONFIDENTIAL),
    )
    changed = held is None and _grants_out(session, doc.id) != before
    return _change(session, doc.id, held, changed, response)


@router.delete("/documents/{doc_id}/grants")
def remove_grant(
    doc: ManagedDocument,
    principal: Annotated[
        str, Query(min_length=1, max_length=80, description="user:NAME, group:NAME or everyone.")
    ],
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    rt: RuntimeDep,
) -> ChangeOut:
    """Take a grant away; it applies to the next search. The last `manage` grant stays."""
    stored = resolve_name(session, principal)
    removed = acl.revoke(session=session, index=rt.index(), doc=doc, principal=stored, actor=user)
    if not removed:
        raise NotFound("This document has no such grant.")
    return _change(session, doc.id, None, True, response)


@router.patch("/documents/{doc_id}", responses={202: {"model": ChangeOut}})
def set_classification(
    doc: ManagedDocument,
    body: ClassifyIn,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> DocumentOut | ChangeOut:
    """Change a document's classification; needs `manage` (or the admin role).

    An admin who cannot read a confidential or personal document gets 202 and an approval
    request when lowering it to public or internal.
    """
    held = acl.classify(
        session=session,
        index=rt.index(),
        doc=doc,
        classification=body.classification,
        actor=user,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        hold_self_grants=approvals.needs_approval(rt.settings, approvals.SELF_GRANT_CONFIDENTIAL),
    )
    if held is not None:
        return _change(session, doc.id, held, False, response)
    return _doc_out(rt, session, user, doc)


@router.delete(
    "/documents/{doc_id}",
    status_code=204,
    response_class=Response,
    responses={202: {"model": ChangeOut, "description": "Held for a second admin."}},
)
def delete_document(
    doc: ManagedDocument,
    user: CurrentUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> Response:
    """Delete a document: it leaves every search at once, then its key and content go.

    An admin deleting a confidential or personal document they neither own nor manage by a
    grant gets 202 and an approval request (the one deletion rule, as for bulk deletion,
    retain-until dates and erasure); it is deleted when another admin approves it."""
    held = acl.delete_document(
        session=session,
        index=rt.index(),
        crypto=rt.crypto,
        blobs=rt.blobs,
        doc=doc,
        actor=user,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        hold_deletions=acl.hold_deletions(rt.settings),
    )
    if held is not None:
        out = ChangeOut(status="approval_required", approval=approval_out(session, held.request))
        return Response(out.model_dump_json(), status_code=202, media_type="application/json")
    return Response(status_code=204)


# -- approval requests for document actions (admins) ------------------------------------


@approvals_router.post("", status_code=201)
def create_approval(
    body: ApprovalIn, admin: AdminUser, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> ApprovalRequestOut:
    """Ask a second admin to approve a grant or a classification change on a document."""
    doc = managed_document(session, admin, body.doc_id)
    params: dict[str, Any]
    if body.kind == "grant":
        if not body.principal:
            raise InvalidInput("A grant request names a principal.")
        params = {
            "principal": resolve_name(session, body.principal),
            "level": body.level,
        }
    else:
        if body.classification is None:
            raise InvalidInput("A classify request names a classification.")
        params = {"classification": body.classification}
    req = approvals.request(
        session=session,
        doc_id=doc.id,
        kind=body.kind,
        params=params,
        requester=admin,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        reason=body.reason,
    )
    session.commit()
    return approval_out(session, req, crypto=rt.crypto)


router.include_router(approvals_router)
