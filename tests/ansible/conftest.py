"""The Ansible suite runs only through `make ansible-test` (APPLIANCE_ANSIBLE_TEST=1).

It needs root, debootstrap and minutes of provisioning, so the plain `pytest` run of
`make test` does not collect it; `make test` calls `make ansible-test` at its end.
"""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("APPLIANCE_ANSIBLE_TEST") == "1" else ["test_*.py"]
