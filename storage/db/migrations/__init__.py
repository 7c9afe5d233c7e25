"""Alembic migrations for the studio database (configured in code by ``Database.migrate``)."""
