"""Chat domain: retrieval, prompt, generation, citations, conversations and feedback.

Imports core and every domain up to acl (and ``models``).
"""
