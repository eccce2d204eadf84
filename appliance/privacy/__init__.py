"""Privacy: user erasure (right to be forgotten) and user export (right of access)."""
