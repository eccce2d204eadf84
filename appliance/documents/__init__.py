"""Documents domain: documents, chunks, grants and legal holds (tables), submission,
deletion and the ingestion worker.

Imports core, audit, auth, admin and approvals (and ``ingest``).
"""
