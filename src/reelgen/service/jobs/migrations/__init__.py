"""Alembic migrations of the job store: env.py and versions/ (see reelgen.service.jobs.schema)."""
