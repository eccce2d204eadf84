"""ACL domain: principals and group membership, the one read rule, and grant changes.

Imports core, audit, auth, admin, approvals and documents.
"""
