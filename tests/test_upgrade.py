"""The upgrade mechanism (DESIGN §4): ``ALTER EXTENSION ml_stack UPDATE`` from every released version ends with
exactly the schema of a fresh install and keeps every model serving, with no extra call.

Released versions are the install scripts ``extension/ml_stack--X.Y.Z.sql``; the current one is the control
file's ``default_version``. While there is no older release the parametrized upgrade test has nothing to run,
so the mechanism is also proven on a synthetic previous version: the current install script under another
version name, plus the upgrade script that a release without SQL changes would ship. That exercises the real
path (an upgrade script running inside ``ALTER EXTENSION``, the registry triggers, the serving refresh) and the
schema comparison, which the real releases will rely on.

The schema comparison is ``describe_extension()``: a catalog description of everything the extension owns,
minus what legitimately differs between two databases (OIDs, and the bodies of the four dispatch functions,
which are generated from the registry's contents).
"""

import os
import re
import subprocess
from collections import deque
from pathlib import Path

import pytest
from psycopg import sql

from datasets import fetch_xy
from helpers import model_row, registry_rows, serving_state, train, train_every_kind

REPO = Path(__file__).resolve().parent.parent
EXTENSION_DIR = REPO / "extension"
EXTNAME = "ml_stack"

# Members whose body is regenerated from the registry (sql/serving/compile.sql): in two databases with different
# models they differ by design, so only their signature and properties are compared.
DISPATCH_FUNCTIONS = ("_predict_project", "_predict_proba_project", "_predict_model", "_predict_proba_model")


# --------------------------------------------------------------------------------------------------------------
# versions and scripts in the repository


def _version_key(version):
    return tuple(int(part) for part in version.split("."))


def current_version(extension=EXTNAME):
    control = (REPO / "control" / f"{extension}.control").read_text()
    return re.search(r"^default_version\s*=\s*'([^']+)'", control, re.M).group(1)


def released_versions():
    """Versions that have an install script, oldest first. Upgrade scripts (``A--B``) are not install scripts."""
    found = [m.group(1) for p in EXTENSION_DIR.glob(f"{EXTNAME}--*.sql")
             if (m := re.fullmatch(rf"{EXTNAME}--(\d+\.\d+\.\d+)\.sql", p.name))]
    return sorted(found, key=_version_key)


def upgrade_scripts():
    """{(from, to): path} of every upgrade script in the repository."""
    return {(m.group(1), m.group(2)): p for p in EXTENSION_DIR.glob(f"{EXTNAME}--*--*.sql")
            if (m := re.fullmatch(rf"{EXTNAME}--([^-]+(?:-[^-]+)*)--([^-]+(?:-[^-]+)*)\.sql", p.name))}


def upgrade_path(source, target, edges):
    """Shortest chain of versions from ``source`` to ``target`` over ``edges``, or None (as PostgreSQL picks)."""
    queue, seen = deque([[source]]), {source}
    while queue:
        path = queue.popleft()
        if path[-1] == target:
            return path
        for a, b in sorted(edges):
            if a == path[-1] and b not in seen:
                seen.add(b)
                queue.append(path + [b])
    return None


CURRENT = current_version()
OLDER = [v for v in released_versions() if _version_key(v) < _version_key(CURRENT)]
# Parameters of the per-release tests: say why nothing runs rather than pytest's "empty parameter set".
OLDER_PARAMS = OLDER or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"no released version older than {CURRENT} (test_update_mechanism_on_synthetic_version covers the path)"))]


# --------------------------------------------------------------------------------------------------------------
# the schema description


_DESCRIBE = {
    # Every member, as PostgreSQL names it: catches objects added or left behind by an upgrade script.
    "members": r"""
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
        FROM pg_depend AS d, ext
        WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'""",
    "extension": r"""
        SELECT format('version %s, schema %s, relocatable %s, config %s, conditions %s',
                      e.extversion, e.extnamespace::regnamespace, e.extrelocatable,
                      (SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) FROM unnest(e.extconfig) AS c),
                      e.extcondition)
        FROM pg_extension AS e, ext WHERE e.oid = ext.oid""",
    # The extension's schema: CREATE EXTENSION makes it, but it is not a member (the extension depends on it).
    "schema": r"""
        SELECT format('%s owner %s acl %s comment %L', n.nspname, pg_get_userbyid(n.nspowner), n.nspacl,
                      obj_description(n.oid, 'pg_namespace'))
        FROM pg_namespace AS n JOIN pg_extension AS e ON e.extnamespace = n.oid, ext WHERE e.oid = ext.oid""",
    # Functions: everything CREATE FUNCTION can say, including the body, except the dispatch bodies.
    "functions": r"""
        SELECT format(E'%s(%s) RETURNS %s\n  kind %s lang %s volatility %s parallel %s strict %s secdef %s '
                      'leakproof %s cost %s rows %s config %s owner %s acl %s' || E'\n  comment %L\n  body %s',
                      p.oid::regproc::text, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
                      p.prokind, l.lanname, p.provolatile, p.proparallel, p.proisstrict, p.prosecdef,
                      p.proleakproof, p.procost, p.prorows, p.proconfig, pg_get_userbyid(p.proowner), p.proacl,
                      obj_description(p.oid, 'pg_proc'),
                      CASE WHEN p.proname = ANY (:dispatch) THEN '<generated from the registry>'
                           ELSE p.prosrc END)
        FROM pg_proc AS p
        JOIN members AS m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
        JOIN pg_language AS l ON l.oid = p.prolang""",
    "relations": r"""
        SELECT format('%s kind %s persistence %s options %s owner %s acl %s rls %s comment %L',
                      c.oid::regclass, c.relkind, c.relpersistence, c.reloptions, pg_get_userbyid(c.relowner),
                      c.relacl, c.relrowsecurity, obj_description(c.oid, 'pg_class'))
        FROM pg_class AS c JOIN members AS m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid""",
    # Columns by logical position (dropped columns skipped): column order matters to SELECT *, to COPY without a
    # column list, and to the row types PL/pgSQL declares (``proj ml_stack.projects``).
    "columns": r"""
        SELECT format('%s #%s %s %s not null %s default %s identity %L generated %L collation %s comment %L',
                      c.oid::regclass, lpad((row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum))::text, 3, '0'),
                      a.attname,
                      format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid),
                      a.attidentity, a.attgenerated, a.attcollation::regcollation,
                      col_description(c.oid, a.attnum))
        FROM pg_class AS c
        JOIN members AS m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef AS ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum""",
    "constraints": r"""
        SELECT format('%s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
        FROM pg_constraint AS co
        JOIN members AS m ON m.classid = 'pg_class'::regclass AND m.objid = co.conrelid""",
    "indexes": r"""
        SELECT pg_get_indexdef(i.indexrelid)
        FROM pg_index AS i JOIN members AS m ON m.classid = 'pg_class'::regclass AND m.objid = i.indrelid""",
    "triggers": r"""
        SELECT format('%s enabled %s', pg_get_triggerdef(t.oid), t.tgenabled)
        FROM pg_trigger AS t JOIN members AS m ON m.classid = 'pg_class'::regclass AND m.objid = t.tgrelid
        WHERE NOT t.tgisinternal""",
    "views": r"""
        SELECT format(E'%s\n%s', c.oid::regclass, pg_get_viewdef(c.oid))
        FROM pg_class AS c JOIN members AS m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
        WHERE c.relkind IN ('v', 'm')""",
    # Sequence parameters and ownership (OWNED BY ties it to its serial column), not its current value.
    "sequences": r"""
        SELECT format('%s type %s start %s increment %s min %s max %s cache %s cycle %s owned by %s',
                      s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                      s.seqcache, s.seqcycle,
                      (SELECT pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) FROM pg_depend AS d
                       WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid AND d.deptype IN ('a', 'i')))
        FROM pg_sequence AS s JOIN members AS m ON m.classid = 'pg_class'::regclass AND m.objid = s.seqrelid""",
    "policies": r"""
        SELECT format('%s %s %s %s using %s check %s', p.polrelid::regclass, p.polname, p.polcmd, p.polroles,
                      pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
        FROM pg_policy AS p JOIN members AS m ON m.classid = 'pg_class'::regclass AND m.objid = p.polrelid""",
    "types": r"""
        SELECT format('%s type %s comment %L enum %s', t.oid::regtype, t.typtype, obj_description(t.oid, 'pg_type'),
                      (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum AS e
                       WHERE e.enumtypid = t.oid))
        FROM pg_type AS t JOIN members AS m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid""",
}


def describe_extension(conn, extname=EXTNAME):
    """{section: sorted lines} describing extension ``extname`` as installed in ``conn``'s database.

    Two databases with equal descriptions have the same extension schema: same members, function signatures,
    bodies (dispatch functions aside), settings, volatility, comments, privileges; same tables, columns and their
    order, types, defaults, constraints, indexes, triggers, views, sequences, and configuration tables for
    pg_dump. Objects are named, never numbered by OID, so databases compare with each other.
    """
    prefix = sql.SQL(r"""
        WITH ext AS (SELECT e.oid FROM pg_extension AS e WHERE e.extname = {}),
             members AS (SELECT d.classid, d.objid FROM pg_depend AS d, ext
                         WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
    """).format(extname).as_string(conn)
    dispatch = sql.SQL("ARRAY[{}]::name[]").format(
        sql.SQL(", ").join(map(sql.Literal, DISPATCH_FUNCTIONS))).as_string(conn)
    description = {}
    for section, query in _DESCRIBE.items():
        # Sent without parameters: the queries are full of format()'s % directives.
        rows = conn.execute(prefix + query.replace(":dispatch", dispatch)).fetchall()
        description[section] = sorted(r[0] for r in rows)
    return description


def diff_descriptions(got, expected):
    """Readable differences between two descriptions; empty when they are equal."""
    lines = []
    for section in expected.keys() | got.keys():
        g, e = set(got.get(section, ())), set(expected.get(section, ()))
        lines += [f"[{section}] only in the first:  {x}" for x in sorted(g - e)]
        lines += [f"[{section}] only in the second: {x}" for x in sorted(e - g)]
    return lines


def assert_same_schema(got, expected):
    differences = diff_descriptions(got, expected)
    assert not differences, "extension schemas differ:\n" + "\n".join(differences)


# --------------------------------------------------------------------------------------------------------------
# models and what they serve


def _compiled_predictors(conn):
    """The run-time predictor functions, and whether each is an extension member (it must never be one: members
    are not dumped, and an upgrade script may not replace an object the extension does not own)."""
    return conn.execute(r"""
        SELECT p.oid::regprocedure::text,
               EXISTS (SELECT FROM pg_depend AS d
                       WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
        FROM pg_proc AS p
        WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname ~ '^_model_\d+_(predict|proba)$'
        ORDER BY 1""").fetchall()


def _extversion(conn):
    return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'ml_stack'").fetchone()[0]


def _fresh_install_description(pg_server, new_db):
    with pg_server.connect(new_db("ml_stack_fresh")) as fresh:
        fresh.execute("CREATE EXTENSION ml_stack")
        return describe_extension(fresh)


def check_upgrade(pg_server, new_db, from_version):
    """Install ``from_version``, train, update to the current version: same predictions, fresh-install schema."""
    dbname = new_db("ml_stack_upgrade")
    with pg_server.connect(dbname) as old:
        old.execute(sql.SQL("CREATE EXTENSION ml_stack VERSION {}").format(sql.Literal(from_version)))
        assert _extversion(old) == from_version
        ids = train_every_kind(old)
        served, registry = serving_state(old), registry_json(old)
        next_model_id = old.execute("SELECT max(id) + 1 FROM ml_stack.models").fetchone()[0]
        old.execute("ALTER EXTENSION ml_stack UPDATE")
    # A new session, as an application would open after the upgrade: nothing to call first.
    with pg_server.connect(dbname) as upgraded:
        assert _extversion(upgraded) == CURRENT
        after = serving_state(upgraded)
        for key, rows in served.items():
            assert after[key] == rows, f"{key} serves other values after the upgrade"
        assert_registry_kept(registry, registry_json(upgraded))
        assert_same_schema(describe_extension(upgraded), _fresh_install_description(pg_server, new_db))
        assert all(not member for _, member in _compiled_predictors(upgraded))
        # The upgraded registry keeps working: train again, the ids continue, deploy and rollback.
        new_id = upgraded.execute("SELECT model_id FROM ml_stack.train('diabetes', algorithm => 'ridge',"
                                  " hyperparams => '{\"alpha\": 0.1}', automatic_deploy => false)").fetchone()[0]
        assert new_id == next_model_id
        rollback = upgraded.execute("SELECT model_id FROM ml_stack.deploy('diabetes', 'rollback')").fetchone()[0]
        assert rollback == ids["ols"]
        assert serving_state(upgraded)[("project", "diabetes")] == after[("model", ids["ols"])]


def registry_json(conn):
    """Every row of every ml_stack table the extension owns, as JSON objects in id order: {table: [row, ...]}."""
    tables = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_depend AS d JOIN pg_class AS c ON c.oid = d.objid"
        " JOIN pg_extension AS e ON e.oid = d.refobjid"
        " WHERE e.extname = 'ml_stack' AND d.classid = 'pg_class'::regclass AND c.relkind = 'r' ORDER BY 1")]
    # tables without an id (vocabulary terms, queues) in the order of their rows' JSON
    return {t: [r[0] for r in conn.execute(sql.SQL("SELECT to_jsonb(t) FROM ml_stack.{} AS t ORDER BY to_jsonb(t) ->> 'id', 1")
                                            .format(sql.Identifier(t)))] for t in tables}


# columns added by an upgrade that old rows take with a value: (table, column) -> that value
ADDED_WITH_DEFAULT = {("projects", "confidential"): False}   # 0.4.1: old projects are not confidential


def assert_registry_kept(before, after):
    """An upgrade keeps every row and value; columns it adds are NULL on old rows (or take their default)."""
    for table, rows in before.items():
        assert len(after[table]) == len(rows), f"{table}: rows lost or added by the upgrade"
        for old_row, new_row in zip(rows, after[table]):
            assert {k: new_row[k] for k in old_row} == old_row, f"{table}: a row changed in the upgrade"
            added = {k: v for k, v in new_row.items() if k not in old_row}
            assert all(v == ADDED_WITH_DEFAULT.get((table, k)) for k, v in added.items()), \
                f"{table}: new columns {added} on an old row"


# --------------------------------------------------------------------------------------------------------------
# the repository's versions and scripts


def test_extension_directory_holds_versioned_scripts():
    """Every file is an install or upgrade script these tests recognise (a misnamed one would go untested), and
    the current version has its install script."""
    recognised = {f"{EXTNAME}--{v}.sql" for v in released_versions()} | {p.name for p in upgrade_scripts().values()}
    recognised.add("released.sha256")  # the record of released scripts (tests/test_packaging.py)
    # the bundle's other extensions (tests/test_python_engine.py, test_dropin_pgml.py, test_dropin_vectorize.py)
    for other in ("ml_stack_python", "ml_stack_pgml", "ml_stack_vectorize"):
        recognised |= {p.name for p in EXTENSION_DIR.glob(f"{other}--*.sql")}
    assert sorted(p.name for p in EXTENSION_DIR.iterdir()) == sorted(recognised)
    assert CURRENT in released_versions(), f"extension/{EXTNAME}--{CURRENT}.sql is missing"


def test_install_script_is_built_from_sources():
    """The committed install script is what scripts/build_script.sh makes from sql/ (no drift either way)."""
    res = subprocess.run(["make", "--no-print-directory", "check-built"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, f"make check-built: the install script differs from sql/:\n{res.stdout}{res.stderr}"


def test_upgrade_scripts_form_paths_to_current():
    """Every released version reaches the current one through upgrade scripts, each going forward between known
    versions and ending with the serving refresh (compile.sql: upgrade scripts call _refresh_serving())."""
    scripts = upgrade_scripts()
    released = released_versions()
    for (a, b), path in scripts.items():
        assert a in released and (b in released or b == CURRENT), f"{path.name}: unknown version"
        assert _version_key(a) < _version_key(b) <= _version_key(CURRENT), f"{path.name} does not go forward"
        assert re.search(r"ml_stack\._refresh_serving\(\)", path.read_text()), \
            f"{path.name} does not call ml_stack._refresh_serving()"
    for version in OLDER:
        assert upgrade_path(version, CURRENT, scripts), f"no upgrade path from {version} to {CURRENT}"


def test_server_has_every_released_version(conn):
    """`make install` installed every script: the server can install each release and update it to current."""
    available = {r[0] for r in conn.execute(
        "SELECT version FROM pg_available_extension_versions WHERE name = 'ml_stack'")}
    assert set(released_versions()) <= available
    paths = dict(((s, t), p) for s, t, p in conn.execute(
        "SELECT source, target, path FROM pg_extension_update_paths('ml_stack')"))
    for version in OLDER:
        assert paths.get((version, CURRENT)), f"the server finds no update path from {version} to {CURRENT}"


# --------------------------------------------------------------------------------------------------------------
# the schema description helper


def test_description_fresh_install_equals_fresh_install(pg_server, new_db, conn):
    first = _fresh_install_description(pg_server, new_db)
    second = _fresh_install_description(pg_server, new_db)
    assert_same_schema(first, second)
    # The per-test database is a clone of the harness's template: the same install.
    assert_same_schema(describe_extension(conn), first)
    # Not vacuous: it sees the registry, the API and the dispatch functions.
    assert {"table ml_stack.models", "function ml_stack.predict(text,double precision[])",
            "function ml_stack._predict_project(text,double precision[])"} <= set(first["members"])
    assert any(line.startswith("CREATE TRIGGER compile_inserted") for line in first["triggers"])


def test_description_ignores_models_but_not_schema_changes(conn):
    """Training only changes what is excluded on purpose; every kind of schema change shows in its section."""
    fresh = describe_extension(conn)
    train_every_kind(conn)
    trained = describe_extension(conn)
    assert_same_schema(trained, fresh)
    predictors = _compiled_predictors(conn)
    assert len(predictors) == 2 * 4 and not any(member for _, member in predictors)

    changes = [
        ("functions", "CREATE OR REPLACE FUNCTION ml_stack._key_metric(task text) RETURNS text"
                      " LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp"
                      " AS $$ SELECT 'r2' $$"),
        ("functions", "ALTER FUNCTION ml_stack._key_metric(text) SET work_mem = '8MB'"),
        ("functions", "ALTER FUNCTION ml_stack.predict(text, float8[]) VOLATILE"),
        ("functions", "COMMENT ON FUNCTION ml_stack.export_model(bigint) IS 'changed'"),
        ("columns", "ALTER TABLE ml_stack.models ALTER COLUMN status SET DEFAULT 'imported'"),
        ("columns", "ALTER TABLE ml_stack.models ADD COLUMN extra integer"),
        ("constraints", "ALTER TABLE ml_stack.projects ADD CONSTRAINT short_name CHECK (length(name) < 100)"),
        ("indexes", "CREATE INDEX ON ml_stack.models (created_at)"),
        ("triggers", "ALTER TABLE ml_stack.deployments DISABLE TRIGGER refresh_serving"),
        ("relations", "COMMENT ON TABLE ml_stack.snapshots IS 'changed'"),
        ("relations", "GRANT SELECT ON ml_stack.models TO PUBLIC"),
        ("sequences", "ALTER SEQUENCE ml_stack.models_id_seq INCREMENT 2"),
        ("schema", "COMMENT ON SCHEMA ml_stack IS 'changed'"),
        ("views", "DO $$ BEGIN EXECUTE 'CREATE OR REPLACE VIEW ml_stack.deployed_models AS '"
                  " || rtrim(pg_get_viewdef('ml_stack.deployed_models'::regclass), ';') || ' LIMIT 1000'; END $$"),
        # Leaving the extension takes a sequence out of the configuration that pg_dump dumps.
        ("extension", "ALTER EXTENSION ml_stack DROP SEQUENCE ml_stack.snapshots_id_seq"),
        ("members", "ALTER EXTENSION ml_stack DROP FUNCTION ml_stack._argmax(float8[])"),
    ]
    before = trained
    for section, statement in changes:
        conn.execute(statement)
        after = describe_extension(conn)
        changed = {s for s in after if after[s] != before[s]}
        assert section in changed, f"not seen in [{section}]: {statement}"
        before = after

    # The dispatch bodies are the exception: replacing one (as the triggers do) changes nothing described.
    conn.execute("SELECT ml_stack._refresh_serving()")
    conn.execute("CREATE OR REPLACE FUNCTION ml_stack._predict_model(model_id bigint, features float8[])"
                 " RETURNS float8 LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT NULL::float8 $$")
    assert_same_schema(describe_extension(conn), before)


# --------------------------------------------------------------------------------------------------------------
# updates


def test_install_and_updates_print_no_stray_notices(pg_server, new_db):
    """psql as the user sees it (0.5.0): CREATE EXTENSION and ALTER EXTENSION UPDATE from every released version
    print nothing of ml_stack's own (no "... does not exist, skipping")."""
    for version in [None] + OLDER:
        with pg_server.connect(new_db("ml_stack_notices")) as db:
            notices = []
            db.add_notice_handler(lambda diag: notices.append(diag.message_primary))
            if version is None:
                db.execute("CREATE EXTENSION ml_stack")
            else:
                db.execute(sql.SQL("CREATE EXTENSION ml_stack VERSION {}").format(sql.Literal(version)))
                notices.clear()   # what an old version printed is history
                db.execute("ALTER EXTENSION ml_stack UPDATE")
            assert notices == [], (version, notices)


def test_update_on_current_version_is_a_no_op(conn):
    train_every_kind(conn)
    served, registry, schema = serving_state(conn), registry_rows(conn), describe_extension(conn)
    notices = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    conn.execute("ALTER EXTENSION ml_stack UPDATE")
    conn.execute(sql.SQL("ALTER EXTENSION ml_stack UPDATE TO {}").format(sql.Literal(CURRENT)))
    assert notices == [f'version "{CURRENT}" of extension "ml_stack" is already installed'] * 2
    assert serving_state(conn) == served
    assert registry_rows(conn) == registry
    assert_same_schema(describe_extension(conn), schema)


@pytest.mark.parametrize("from_version", OLDER_PARAMS)
def test_update_from_released_version(pg_server, new_db, from_version):
    check_upgrade(pg_server, new_db, from_version)


@pytest.mark.parametrize("from_version", OLDER_PARAMS)
def test_dump_of_released_version_restores_under_current(pg_server, new_db, tmp_path, from_version):
    check_dump_restores_under_current(pg_server, new_db, tmp_path, from_version)


def check_dump_restores_under_current(pg_server, new_db, tmp_path, from_version):
    """A dump taken under an older release restores into a server that has the current one: pg_dump writes
    CREATE EXTENSION without a version, so the registry rows of the old version are COPYed into the new tables."""
    source = new_db("ml_stack_old")
    with pg_server.connect(source) as old:
        old.execute(sql.SQL("CREATE EXTENSION ml_stack VERSION {}").format(sql.Literal(from_version)))
        train_every_kind(old)
        served = serving_state(old)
    dump, target = tmp_path / "old.dump", new_db("ml_stack_new")
    common = ["-h", pg_server.host, "-p", str(pg_server.port), "-U", pg_server.user]
    for cmd in ([pg_server.bin("pg_dump"), *common, "-Fc", "-f", str(dump), source],
                [pg_server.bin("pg_restore"), *common, "--exit-on-error", "--single-transaction", "-d", target,
                 str(dump)]):
        res = subprocess.run(cmd, env=pg_server.env(), capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    with pg_server.connect(target) as restored:
        assert _extversion(restored) == CURRENT
        assert serving_state(restored) == served


# --------------------------------------------------------------------------------------------------------------
# the mechanism, on a synthetic previous version


@pytest.fixture
def synthetic_version(pg_server):
    """A previous version named ``<current>-selftest<pid>`` in the server's extension directory.

    Its install script is the installed current one (so a fresh install is what it should update to); the
    returned function writes its upgrade script with the given body and returns the version name. Both files
    are removed afterwards; the pid keeps concurrent test runs apart.
    """
    with pg_server.connect() as c:
        sharedir = c.execute("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'").fetchone()[0]
    target_dir = Path(sharedir) / "extension"
    if not os.access(target_dir, os.W_OK):
        pytest.skip(f"{target_dir} is not writable: cannot install a synthetic version")
    version = f"{CURRENT}-selftest{os.getpid()}"
    install = target_dir / f"{EXTNAME}--{version}.sql"
    upgrade = target_dir / f"{EXTNAME}--{version}--{CURRENT}.sql"
    try:
        install.write_text((target_dir / f"{EXTNAME}--{CURRENT}.sql").read_text())

        def with_upgrade_script(body):
            upgrade.write_text(f"-- synthetic upgrade {version} -> {CURRENT} (tests/test_upgrade.py)\n{body}\n")
            return version

        yield with_upgrade_script
    finally:
        install.unlink(missing_ok=True)
        upgrade.unlink(missing_ok=True)


def test_update_mechanism_on_synthetic_version(pg_server, new_db, synthetic_version):
    """What a release without SQL changes ships: an upgrade script that only refreshes the serving layer."""
    version = synthetic_version("SELECT ml_stack._refresh_serving();")
    check_upgrade(pg_server, new_db, version)


def test_dump_of_synthetic_version_restores_under_current(pg_server, new_db, tmp_path, synthetic_version):
    check_dump_restores_under_current(pg_server, new_db, tmp_path, synthetic_version("SELECT 1;"))


def test_update_can_recompile_predictors(pg_server, new_db, synthetic_version):
    """A release that changes how models compile must rebuild every predictor during the update, from the
    upgrade script, since predictions must be right with no extra call. ml_stack._create_predictor drops and
    creates each predictor and releases it from the extension, so it stays free-standing and pg_dump keeps it."""
    version = synthetic_version("SELECT ml_stack._compile_model(id) FROM ml_stack.models ORDER BY id;\n"
                                "SELECT ml_stack._refresh_serving();")
    check_upgrade(pg_server, new_db, version)


# --------------------------------------------------------------------------------------------------------------
# the python engine on an upgraded database
# (CREATE EXTENSION ml_stack_python refused while ml_stack is 0.1.0, with the ALTER EXTENSION hint:
# test_python_engine::test_install_needs_ml_stack_0_2_0)


@pytest.mark.skipif("0.1.0" not in OLDER, reason="ml_stack 0.1.0 is not a released older version")
def test_python_engine_on_a_database_updated_from_0_1_0(pg_server, new_db):
    """A 0.1.0 database with SQL-engine models, updated: ml_stack_python installs, XGBoost trains in an old project
    and deploys, and the old models serve exactly what they did under 0.1.0."""
    import numpy as np
    from test_python_engine import library_outputs, oracle  # imports xgboost and scikit-learn: only here

    dbname = new_db("ml_stack_upgrade_python")
    with pg_server.connect(dbname) as old:
        old.execute("CREATE EXTENSION ml_stack VERSION '0.1.0'")
        ids = train_every_kind(old)
        served, registry = serving_state(old), registry_json(old)
        next_model_id = old.execute("SELECT max(id) + 1 FROM ml_stack.models").fetchone()[0]
        old.execute("ALTER EXTENSION ml_stack UPDATE")
    with pg_server.connect(dbname) as db:
        db.execute("CREATE EXTENSION ml_stack_python CASCADE")
        assert dict(db.execute("SELECT extname, extversion FROM pg_extension WHERE extname LIKE 'ml_stack%'")
                    .fetchall()) == {"ml_stack": CURRENT, "ml_stack_python": current_version("ml_stack_python")}
        # installing the engine changes nothing the old models serve, nor the registry
        assert serving_state(db) == served
        assert_registry_kept(registry, registry_json(db))

        # XGBoost in the project made under 0.1.0, by its name only: its relation, label, task and split seed
        row = train(db, "iris", algorithm="xgboost", hyperparams={"n_estimators": 10}, automatic_deploy=False)
        assert (row["model_id"], row["engine"], row["task"], row["deployed"]) == \
            (next_model_id, "python", "classification", False)
        m = model_row(db, row["model_id"])
        assert m["artifact"]["format"] == "trees" and m["artifact"]["library"] == "xgboost"
        assert m["snapshot_id"] > model_row(db, ids["multinomial"])["snapshot_id"]
        deployed = db.execute("SELECT project, strategy, model_id FROM ml_stack.deploy(%s::bigint)",
                              (row["model_id"],)).fetchone()
        assert deployed == ("iris", "specific", row["model_id"])

        after = serving_state(db)
        assert after[("project", "iris")] == after[("model", row["model_id"])]
        # what it serves is XGBoost's own model of those rows: every class exactly, and the probabilities are the
        # float8 softmax (ml_stack._softmax's arithmetic) of XGBoost's float32 margins, to an ulp of exp()
        est, V, y, _, _, classes = oracle(db, row["model_id"], "iris", "iris")
        pred, proba = library_outputs(est, V, classes)
        got = after[("model", row["model_id"])]
        assert [r[0] for r in got] == fetch_xy(db, "iris")[0].tolist()   # the same rows, in the same order
        assert np.array_equal([r[1] for r in got], pred)
        margins = np.asarray(est.predict(V, output_margin=True), dtype=np.float64)
        e = np.exp(margins - margins.max(axis=1, keepdims=True))
        softmax = e / (e[:, 0] + e[:, 1] + e[:, 2])[:, None]
        served_proba = np.array([r[2] for r in got])
        assert np.abs(served_proba - softmax).max() <= 4e-16
        assert np.abs(served_proba - proba).max() <= 1e-7                   # the library's own float32 softmax
        assert len(set(pred)) == 3
        # every old model and project serves what it did under 0.1.0
        for key, rows in served.items():
            if key != ("project", "iris"):
                assert after[key] == rows, f"{key} serves other values after the update and the engine's install"
        # the history made under 0.1.0 and the new deployment are one: a rollback gives the 0.1.0 model back
        rollback = db.execute("SELECT model_id FROM ml_stack.deploy('iris', 'rollback')").fetchone()[0]
        assert rollback == ids["multinomial"]
        assert serving_state(db)[("project", "iris")] == served[("project", "iris")]


def _text_state(conn):
    """What a database's text objects give: embeddings of a fitted vectorizer, a naive Bayes text model's answers
    by row, and each job's search results."""
    return {
        "embed": conn.execute("SELECT ml_stack.embed('titles_tfidf', title) FROM docs ORDER BY id").fetchall(),
        "predict_row": conn.execute("SELECT id, ml_stack.predict_row('clickbait', to_jsonb(d)) FROM docs AS d "
                                    "ORDER BY id").fetchall(),
        "search": {(job, mode): conn.execute("SELECT id, score, rank FROM ml_stack.search(%s, 'shocking cats', 5, "
                                             "NULL, %s)", (job, mode)).fetchall()
                   for job in ("docs_hashing", "docs_tfidf") for mode in ("semantic", "keyword", "hybrid")},
    }


@pytest.mark.skipif("0.3.0" not in OLDER, reason="ml_stack 0.3.0 is not a released older version")
def test_text_and_vector_jobs_made_under_0_3_0_work_after_the_update(pg_server, new_db):
    """Vector jobs (hashing, and a fitted tfidf vectorizer), their embeddings and a naive Bayes text model made
    under 0.3.0 give the same embeddings, answers and search results after ALTER EXTENSION UPDATE, the jobs keep
    following every kind of write, and the schema is a fresh install's."""
    dbname = new_db("ml_stack_upgrade_text")
    with pg_server.connect(dbname) as old:
        old.execute("CREATE EXTENSION ml_stack VERSION '0.3.0'")
        old.execute("""
            CREATE TABLE docs (id integer PRIMARY KEY, title text, label integer);
            INSERT INTO docs SELECT i, (ARRAY['you will not believe these', 'council approves budget for',
                                              'shocking photos of', 'mayor opens new'])[1 + i % 4]
                                       || ' ' || (ARRAY['cats', 'roads', 'stars', 'schools', 'bridges'])[1 + i % 5],
                                    (i % 4 IN (0, 2))::integer
            FROM generate_series(1, 120) AS i;
        """)
        old.execute("SELECT ml_stack.fit_vectorizer('titles_tfidf', 'docs', 'title')")
        old.execute("SELECT ml_stack.create_vector_job('docs_hashing', 'docs', 'id', ARRAY['title'])")
        old.execute("SELECT ml_stack.create_vector_job('docs_tfidf', 'docs', 'id', ARRAY['title'], 'titles_tfidf')")
        old.execute("CREATE VIEW labelled AS SELECT title, label FROM docs")
        old.execute("SELECT * FROM ml_stack.train('clickbait', 'classification', 'labelled', 'label', "
                    "algorithm => 'naive_bayes', preprocess => '{\"title\": {\"vectorize\": \"tfidf\"}}')")
        before = _text_state(old)
        assert len(before["search"][("docs_hashing", "semantic")]) == 5
        old.execute("ALTER EXTENSION ml_stack UPDATE")
    with pg_server.connect(dbname) as db:
        assert _extversion(db) == CURRENT
        assert _text_state(db) == before
        assert_same_schema(describe_extension(db), _fresh_install_description(pg_server, new_db))
        # the jobs follow writes made after the update: INSERT, UPDATE of the text, DELETE
        db.execute("INSERT INTO docs VALUES (500, 'unbelievable shocking cats cats cats', 1)")
        db.execute("UPDATE docs SET title = 'quiet council minutes' WHERE id = 4")
        db.execute("DELETE FROM docs WHERE id = 8")
        db.execute("SELECT ml_stack.process_vector_jobs()")
        for job in ("docs_hashing", "docs_tfidf"):
            found = [r[0] for r in db.execute("SELECT id FROM ml_stack.search(%s, 'shocking cats', 200, NULL, 'keyword')",
                                              (job,)).fetchall()]
            assert "500" in found and "4" not in found and "8" not in found
        assert db.execute("SELECT source_rows, embedded_rows, pending, failed FROM ml_stack.vector_jobs "
                          "ORDER BY job_name").fetchall() == [(120, 120, 0, 0)] * 2
        # and the project trains again by its name, its text rule kept
        row = train(db, "clickbait", algorithm="naive_bayes", hyperparams={"alpha": 0.5})
        assert row["metrics"]["f1"] > 0.9


EXPOSING = [v for v in OLDER if _version_key(v) >= _version_key("0.4.0")]


@pytest.mark.parametrize("from_version", EXPOSING or [pytest.param(None, marks=pytest.mark.skip(reason="none"))])
def test_exposed_endpoints_survive_the_update(pg_server, new_db, from_version):
    """Endpoints made by expose() under a released version answer the same after ALTER EXTENSION UPDATE, keep
    their grants and comments, and the API role still reaches nothing else."""
    import uuid

    import psycopg
    anon = f"anon_{uuid.uuid4().hex[:8]}"
    dbname = new_db("ml_stack_upgrade_api")
    calls = ("SELECT api.predict_prices(50, 2), "
             "(SELECT array_agg(prediction ORDER BY row) FROM api.predict_batch_prices('[{\"area\": 30, \"rooms\": 1}]'))")
    endpoints = ("SELECT p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc'), "
                 "has_function_privilege(%s, p.oid, 'EXECUTE') FROM pg_proc AS p "
                 "WHERE p.pronamespace = 'api'::regnamespace ORDER BY 1")
    with pg_server.connect(dbname) as db:
        db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(anon)))
        try:
            db.execute(sql.SQL("CREATE EXTENSION ml_stack VERSION {}").format(sql.Literal(from_version)))
            db.execute("CREATE TABLE prices (area float8, rooms integer, price float8)")
            db.execute("INSERT INTO prices SELECT 20 + i % 90, 1 + i % 5, 1000 + 30 * (20 + i % 90) + 500 * (1 + i % 5) "
                       "+ (i % 11) FROM generate_series(1, 300) AS i")
            db.execute("SELECT * FROM ml_stack.train('prices', 'regression', 'prices', 'price')")
            db.execute("SELECT ml_stack.expose('prices', 'api', %s)", ([anon],))

            def as_anon():
                db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(anon)))
                try:
                    return db.execute(calls).fetchall()
                finally:
                    db.execute("RESET ROLE")
            before, made = as_anon(), db.execute(endpoints, (anon,)).fetchall()
            assert len(made) == 2 and all(granted for *_, granted in made)
            db.execute("ALTER EXTENSION ml_stack UPDATE")
            assert _extversion(db) == CURRENT
            assert as_anon() == before
            assert db.execute(endpoints, (anon,)).fetchall() == made
            db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(anon)))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("SELECT * FROM ml_stack.models")
            db.execute("RESET ROLE")
            # and they follow the deployment made after the update
            db.execute("SELECT * FROM ml_stack.train('prices', algorithm => 'ridge', hyperparams => '{\"alpha\": 1000}', "
                       "automatic_deploy => false)")
            db.execute("SELECT * FROM ml_stack.deploy('prices', 'most_recent')")
            assert as_anon() != before
            assert as_anon()[0][0] == db.execute("SELECT ml_stack.predict('prices', ARRAY[50, 2])").fetchone()[0]
        finally:
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(anon)))
            db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(anon)))
