"""Retention: per-classification policies, retain-until dates, legal holds, the retention job."""
