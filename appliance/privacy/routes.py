"""HTTP API for user erasure (admins) and user export (admins, and everyone for themselves)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import Depends, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from appliance.acl import duties
from appliance.approvals.schemas import ApprovalRequestOut, approval_out
from appliance.deps import AdminUser, CurrentUser, NowDep, RuntimeDep, admin_user, protected_router
from appliance.privacy import service as privacy
from appliance.privacy.schemas import EraseIn, ErasureOut

router = protected_router(prefix="/api", tags=["privacy"])
admin_router = protected_router(
    prefix="/api/admin", tags=["privacy"], dependencies=[Depends(admin_user)]
)
ZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "A zip archive."}
}


def _zip(data: bytes, name: str) -> Response:
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@admin_router.post(
    "/users/{user_id}/erase",
    response_model=ErasureOut,
    responses={202: {"model": ApprovalRequestOut, "description": "Held for a second admin."}},
)
async def erase(
    user_id: str, body: EraseIn, admin: AdminUser, rt: RuntimeDep, now: NowDep
) -> ErasureOut | JSONResponse:
    """Erase a user (right to be forgotten): conversations (their key is shredded), sessions,
    API tokens, second factor, memberships, grants, and owned documents, deleted or
    transferred to `transfer_to`; then the account. The audit log keeps only `user:<id>`.

    Refused for yourself, for the last active admin, and (with documents=delete) when one
    of their documents is under legal hold.

    Held for a second admin (202 with the approval request; the erasure runs, as asked,
    when another admin approves it): transferring confidential or personal documents to
    yourself or to an account whose credentials you set, and deleting confidential or
    personal documents you neither own nor manage by a grant."""
    result = await run_in_threadpool(
        lambda: privacy.request_erasure(
            rt=rt,
            user_id=user_id,
            documents=body.documents,
            transfer_to=body.transfer_to,
            actor=admin,
            now=now,
        )
    )
    if isinstance(result, duties.Held):
        with rt.sessions() as session:
            out = approval_out(session, result.request, crypto=rt.crypto)
        return JSONResponse(out.model_dump(mode="json"), status_code=202)
    return ErasureOut(**dataclasses.asdict(result))


@admin_router.get("/users/{user_id}/export", response_class=Response, responses=ZIP)
def admin_export(user_id: str, admin: AdminUser, rt: RuntimeDep, now: NowDep) -> Response:
    """A zip of a user's data (right of access) as an admin may see it: profile, owned
    documents' metadata, feedback, the audit events they did, and their conversations'
    dates and sizes. Conversation text, cited passages and document titles are left out:
    admins manage, they do not read. The user downloads the whole archive from
    GET /api/me/export (or an operator runs `appliance users export`). Audited."""
    data = privacy.export_user(
        rt=rt, user_id=user_id, actor=admin.principal, now=now, include_content=False
    )
    return _zip(data, f"user-{user_id}.zip")


@router.get("/me/export", response_class=Response, responses=ZIP)
def my_export(user: CurrentUser, rt: RuntimeDep, now: NowDep) -> Response:
    """A zip of your own data: profile, conversations, your documents' metadata, feedback,
    and the audit events you did. Audited."""
    data = privacy.export_user(rt=rt, user_id=user.id, actor=user.principal, now=now)
    return _zip(data, "my-data.zip")
