from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from pqsync.db.migrate import downgrade, upgrade
from pqsync.db.tables import Base


def test_the_migrations_build_exactly_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_the_schema_downgrades_and_upgrades_again(engine: Engine) -> None:
    downgrade(engine, "base")
    assert "appointments" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "appointments" in inspect(engine).get_table_names()
