"""The core ring: config, db (engine, ids, clock), errors, crypto envelope, places,
classification, blobs, the fair scheduler and the runtime that builds heavy objects once.

Imports no domain (only ``ingest`` and ``models`` below the appliance).
"""
