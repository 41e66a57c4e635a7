"""Storage: engine, metadata, unit of work and migrations, one code path for SQLite and PostgreSQL."""
