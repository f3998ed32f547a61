"""Step 19 of `make demo`: the section classifier shared over HTTP, as the seed workflow ends.

Exposes project ``sections`` with ml_stack.expose (endpoints in schema api, granted to role web_anon only),
prints the postgrest.conf that ml_stack.postgrest_config gives, then serves schema api on loopback and calls it
with PyPI's ``postgrest`` client, as an application would: ``POST /rpc/classify_sections {"description": ...}``.
PostgREST's server is not packaged for Debian 12, so what answers is tests/postgrest_replay.py, which replays in
the database what PostgREST 12 does per request (the same transaction, role switch and call).

Usage: python demo/serve_over_http.py   (libpq environment: PGHOST, PGPORT, PGUSER, PGDATABASE)
"""

import sys
from pathlib import Path

import psycopg
from postgrest import SyncPostgrestClient
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgrest_replay import PostgrestReplay  # noqa: E402

TEXTS = ["Python 3 bindings for the GTK graphical toolkit", "shared library for reading PNG images",
         "simple command-line tool to rename many files", "lightweight DNS and DHCP server"]

with psycopg.connect(autocommit=True) as conn:
    conn.execute("DO $$ BEGIN IF to_regrole('web_anon') IS NULL THEN CREATE ROLE web_anon NOLOGIN; END IF; "
                 "IF to_regrole('authenticator') IS NULL THEN CREATE ROLE authenticator LOGIN NOINHERIT; END IF; END $$")
    conn.execute("GRANT web_anon TO authenticator")
    print("SELECT ml_stack.expose('sections');   -- endpoints in schema api, for role web_anon only")
    for (fn,) in conn.execute("SELECT * FROM ml_stack.expose('sections')"):
        print(f"  {fn}")
    print("SELECT ml_stack.postgrest_config();")
    print("  " + conn.execute("SELECT ml_stack.postgrest_config()").fetchone()[0].replace("\n", "\n  ").rstrip())
    names = dict(conn.execute("SELECT id, name FROM sections").fetchall())
    refused = []
    conn.execute("SET ROLE web_anon")
    for statement in ("SELECT count(*) FROM ml_stack.models", "SELECT count(*) FROM described",
                      "SELECT * FROM ml_stack.train('sections')"):
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege as e:
            refused.append(f"{statement}: {e.diag.message_primary}")
    conn.execute("RESET ROLE")
    conninfo = make_conninfo(conn.info.dsn, user="authenticator")

print("as web_anon, everything but the endpoints is refused:")
for line in refused:
    print(f"  {line}")
with PostgrestReplay(conninfo, ["api"], db_anon_role="web_anon") as server:
    print(f"serving schema api at {server.url} (PostgREST 12's per-request transaction, replayed)")
    with SyncPostgrestClient(server.url, schema="api") as client:
        for text in TEXTS:
            answer = client.rpc("classify_sections", {"description": text}).execute().data
            top = sorted(answer["probabilities"].items(), key=lambda kv: -kv[1])[0][1]
            print(f"  POST /rpc/classify_sections {{\"description\": \"{text}\"}} -> "
                  f"{names[int(answer['label'])]} (p = {top:.2f})")
