"""Privacy: user erasure (right to be forgotten) and user export (right of access).

Imports core and every domain up to retention.
"""
