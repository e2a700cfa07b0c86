#!/usr/bin/env python3
"""Create (or upgrade) Letta 0.16.8's schema on PostgreSQL with Letta's own migrations.

The Letta wheel ships no migrations and a Letta server on Postgres creates no tables; Letta's Docker image runs
`alembic upgrade head` from its source tree before it starts. The source distribution on PyPI carries that tree
(alembic.ini, alembic/): this script runs it, the same way, with Letta's virtualenv. Before that it creates the
pgvector extension (Letta's image does it in init.sql).

Usage:  LETTA_PG_URI=postgresql://... python letta_pg_schema.py MIGRATIONS_DIR [--compare]
  MIGRATIONS_DIR holds alembic.ini and alembic/ from the letta 0.16.8 sdist.
  --compare  afterwards, print as JSON lines what differs between the migrated schema and Letta's ORM models
             (alembic's autogenerate comparison): empty when the migrations build exactly what the code expects.
Env:    LETTA_KIT_EXTRA_PATH is appended to sys.path (pg8000 and pgvector when the virtualenv lacks them).
"""
import json
import os
import sys


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    migrations = os.path.abspath(args[0])
    extra = os.environ.get("LETTA_KIT_EXTRA_PATH")
    if extra:
        sys.path.append(extra)

    from sqlalchemy import create_engine, text

    from letta.database_utils import get_database_uri_for_context
    from letta.settings import DatabaseChoice, settings

    assert settings.database_engine is DatabaseChoice.POSTGRES, "LETTA_PG_URI is not set; refusing"
    engine = create_engine(get_database_uri_for_context(settings.letta_pg_uri, "alembic"))
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))

    from alembic import command
    from alembic.config import Config

    config = Config(os.path.join(migrations, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(migrations, "alembic"))
    command.upgrade(config, "head")

    if "--compare" in args:
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        from letta.orm import Base

        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        for diff in diffs:
            print(json.dumps(diff, default=str))
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
