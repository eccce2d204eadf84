"""Keys domain: key-encryption-key rotation and retirement, and the key-store check.

Knows every domain's data keys, so it sits high: imports core and every domain up to privacy.
"""
