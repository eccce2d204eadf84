"""Alembic migrations (their env imports every table through `appliance.models_registry`)."""
