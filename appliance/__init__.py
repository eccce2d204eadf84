"""The appliance service, in three rings (README "Layout"; pyproject's import-linter contracts).

``core/`` (config, db, errors, crypto, places, classification, blobs, scheduler, runtime)
imports no domain. The domains, in this order, each import core and the domains before
them only::

    audit < auth < admin < approvals < documents < acl < chat < retention < privacy
          < keys < jobs

The faces (each domain's ``routes.py`` and ``cli.py``, ``deps.py``, ``middleware/``,
``pages/``, ``main.py``, ``cli/``, ``wiring.py``) may import anything; nothing imports a
face. ``appliance`` may import ``ingest`` and ``models``; they import nothing of it.
"""

__version__ = "0.1.0"
