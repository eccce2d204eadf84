"""Retention: per-classification policies, retain-until dates, legal holds, the retention job.

Imports core and every domain up to chat.
"""
