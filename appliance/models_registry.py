"""Imports every table module so that Base.metadata knows all tables (for Alembic)."""

from appliance.admin import tables as _admin  # noqa: F401
from appliance.approvals import tables as _approvals  # noqa: F401
from appliance.audit import tables as _audit  # noqa: F401
from appliance.auth import tables as _auth  # noqa: F401
from appliance.chat import tables as _chat  # noqa: F401
from appliance.core.db import Base
from appliance.documents import tables as _documents  # noqa: F401
from appliance.jobs import tables as _jobs  # noqa: F401
from appliance.retention import tables as _retention  # noqa: F401

metadata = Base.metadata
