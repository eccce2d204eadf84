"""Auth domain: accounts, groups, passwords, TOTP, sessions, API tokens, throttling, sign-in.

Imports core and audit.
"""
