#!/usr/bin/env python3
"""Run a real Letta 0.16.8 server on PostgreSQL (and Redis when LETTA_REDIS_HOST is set), bound to 127.0.0.1.

The production set-up of Letta, from packages: `LETTA_PG_URI` names the database, whose schema Letta's own
migrations made (letta_pg_schema.py). Compared with `letta server` this launcher only
  1. puts LETTA_KIT_EXTRA_PATH at the END of sys.path: the packages Letta needs on Postgres and Redis (pg8000,
     pgvector, redis) that its virtualenv may lack; whatever the virtualenv has wins;
  2. makes nltk.download a no-op (the lifespan hook tries to fetch punkt_tab from the internet);
  3. passes --no-generation so the app does not write openapi_letta.json into the cwd;
  4. runs uvicorn on letta.server.rest_api.app:app.

Usage:  LETTA_PG_URI=postgresql://... python letta_pg_server.py [--host 127.0.0.1] [--port 8283]
"""
import argparse
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8283)
    ap.add_argument("--log-level", default=os.environ.get("LETTA_UVICORN_LOG_LEVEL", "warning"))
    args = ap.parse_args()

    extra = os.environ.get("LETTA_KIT_EXTRA_PATH")
    if extra:
        sys.path.append(extra)
    sys.argv = [sys.argv[0], "--no-generation"]  # app.py reads sys.argv at import time

    try:
        import nltk

        nltk.download = lambda *a, **k: True
    except ImportError:
        pass

    from letta.settings import DatabaseChoice, settings

    assert settings.database_engine is DatabaseChoice.POSTGRES, "LETTA_PG_URI is not set; refusing"

    import uvicorn

    from letta.server.rest_api.app import app

    redis = f"redis {settings.redis_host}:{settings.redis_port}" if settings.redis_host else "no redis"
    print(f"letta-pg: postgres, {redis}, pooling {'off' if settings.disable_sqlalchemy_pooling else 'on'}, "
          f"listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_keep_alive=settings.uvicorn_timeout_keep_alive)


if __name__ == "__main__":
    main()
