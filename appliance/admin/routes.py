"""HTTP API for the kill switch: read and flip the system switches (admins)."""

from __future__ import annotations

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from appliance.admin import service
from appliance.admin.schemas import SwitchesIn, SwitchesOut, SwitchOut
from appliance.admin.tables import SWITCHES
from appliance.audit import query as audit_query
from appliance.core.crypto import Crypto
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
    prefix="/api/admin/system", tags=["admin"], dependencies=[Depends(admin_user)]
)


def switches_out(session: Session, *, crypto: Crypto | None = None) -> SwitchesOut:
    """The switches as shown to admins (who flipped them, by name)."""
    states = service.states(session)
    values = {
        name: SwitchOut(
            on=s.on,
            changed_by=(
                audit_query.describe_actor(session, s.changed_by, crypto=crypto)
                if s.changed_by
                else None
            ),
            changed_at=s.changed_at,
            reason=s.reason,
        )
        for name, s in states.items()
    }
    return SwitchesOut(**values)


@router.get("/switches")
def get_switches(session: SessionDep, rt: RuntimeDep) -> SwitchesOut:
    """The kill switch: whether answering or ingestion is paused, or the appliance read-only."""
    return switches_out(session, crypto=rt.crypto)


@router.put("/switches")
def put_switches(
    body: SwitchesIn,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    now: NowDep,
    rt: RuntimeDep,
) -> SwitchesOut:
    """Flip switches; each change is audited with its value before and after.

    `answering_paused`: questions are answered with 503 `maintenance` and a message that an
    admin paused answering. `ingestion_paused`: uploads still queue but the worker starts no
    new document (one in progress finishes). `read_only`: every change is refused with 503
    `read_only`, questions included, except signing in and out and this endpoint. A flip
    applies to the next request in every process and survives a restart.
    """
    for name in SWITCHES:
        value = getattr(body, name)
        if value is not None:
            service.set_switch(
                session,
                name=name,
                on=value,
                actor=admin.principal,
                now=now,
                reason=body.reason,
                client=client_address(request),
            )
    session.commit()
    return switches_out(session, crypto=rt.crypto)
