"""Admin domain: the kill switch (system switches that pause answering, ingestion or writes).

Imports core, audit and auth.
"""
