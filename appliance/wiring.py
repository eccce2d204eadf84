"""Start-up wiring: the hooks and approval executors every entry point installs.

The API (`appliance.main.create_app`), the operator's CLI (`appliance.cli.common`) and the
test suite call `install()` once before anything runs. Each registration is explicit here,
so a reader sees every kind of held action and who runs it; nothing is loaded by name.
"""

from __future__ import annotations

from appliance.acl import service as acl
from appliance.approvals import actions
from appliance.approvals import service as approvals
from appliance.audit import query as audit_query
from appliance.auth import service as users
from appliance.retention import service as retention


def install() -> None:
    """Register the audit name lookup and every approval kind's executor (idempotent)."""
    audit_query.set_actor_names(users.principal_name)
    approvals.register("grant", acl.approved_change)
    approvals.register("classify", acl.approved_change)
    approvals.register(approvals.MAKE_ADMIN, actions.make_admin)
    approvals.register(approvals.AUDIT_EXPORT, actions.deferred, deferred=True)
    approvals.register(approvals.LIFT_LEGAL_HOLD, retention.lift_hold_approved)
    approvals.register(approvals.BULK_DELETE, retention.bulk_delete_approved)
    approvals.register(approvals.SHORTEN_RETENTION, retention.set_policy_approved)
