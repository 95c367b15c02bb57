"""Database: SQLAlchemy tables, engine, repositories and Alembic migrations."""
