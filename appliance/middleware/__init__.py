"""Face: HTTP middleware (CSRF, read-only guard). May import anything; nothing imports it."""
