"""Load the Debian archive's package descriptions into table ``packages`` (demo/text.sql's data).

Usage: python demo/load_packages.py   (libpq environment: PGHOST, PGPORT, PGUSER, PGDATABASE)
"""

import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from debian_text import load_packages  # noqa: E402

with psycopg.connect(autocommit=True) as conn:
    rows = load_packages(conn)
    print(f"loaded {len(rows)} package descriptions into table packages")
