"""Face: HTTP middleware (CSRF, read-only guard, trusted proxies) and the access-log filter.

May import anything; nothing imports it.
"""
