"""PostgREST 12 (tag v12.2.12) replayed over real HTTP, for tests that cannot install the PostgREST server.

``PostgrestReplay`` is a small ``http.server`` on 127.0.0.1 that answers RPC calls (``/rpc/<function>``) and the
OpenAPI root (``/``) by running in PostgreSQL what PostgREST 12 runs for one request (DESIGN §3c), as the
authenticator role, on a pooled connection:

1. ``BEGIN ISOLATION LEVEL <level> READ ONLY`` for GET/HEAD and for POST to a STABLE/IMMUTABLE function,
   ``READ WRITE`` for POST to a VOLATILE one. The level is READ COMMITTED unless the function's or the role's
   ``default_transaction_isolation`` says otherwise.
2. One ``SELECT set_config(...)`` statement: search_path, the target role's own settings, role, request.jwt.claims,
   request.method, request.path, request.headers, request.cookies, then the function's hoisted settings.
3. The pre-request function, if configured.
4. The call, built like PostgREST's ``callPlanToQuery`` + ``prepareCall`` (Query/QueryBuilder.hs, Statements.hs).
5. COMMIT, or ROLLBACK on error; errors map to HTTP statuses by PostgREST 12's table (``pg_error_status``).

Like PostgREST, it reads function signatures and role settings into a schema cache at start and again when told
``NOTIFY pgrst, 'reload schema'`` (it LISTENs on channel ``pgrst``): a function created without a notification is
not found until the next reload. ``reload_count`` and ``wait_for_reload`` let a test wait for one.

What is deliberately not replayed (a request that needs it gets HTTP 501 with code ``REPLAY501``, so that no test
silently depends on behaviour PostgREST would have and the replay lacks): any path but ``/`` and ``/rpc/...``
(tables and views), filters, ``select``,
ordering and limits on RPC results, media types other than JSON, ``OPTIONS``. ``Prefer`` headers and counts are
ignored; serialization failures are not retried. JWTs are HS256 only, checked with stdlib ``hmac``.

Used as ``from postgrest_replay import ...`` (pytest puts tests/ on sys.path); see ``postgrest_server``,
``api_roles`` and ``jwt_for``.
"""

import base64
import hashlib
import hmac
import json
import queue
import re
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.types.json import Json
from psycopg.types.string import TextLoader

POSTGREST_VERSION = "12.2.12"
CHANNEL = "pgrst"  # db-channel
# db-hoisted-tx-settings' default: a function's own SET of these is applied to the whole transaction
HOISTED_TX_SETTINGS = ("statement_timeout", "plan_filter.statement_cost_limit", "default_transaction_isolation")
ISOLATION_LEVELS = {"read committed": "READ COMMITTED", "repeatable read": "REPEATABLE READ",
                    "serializable": "SERIALIZABLE"}
# query-string keys PostgREST reads as something other than function arguments
RESERVED_QUERY_KEYS = {"select", "columns", "order", "limit", "offset", "on_conflict", "and", "or", "not.and",
                       "not.or"}
FILTER_VALUE = re.compile(r"^(not\.)?(eq|neq|gt|gte|lt|lte|like|ilike|match|imatch|in|is|isdistinct|fts|plfts|phfts|"
                          r"wfts|cs|cd|ov|sl|sr|nxr|nxl|adj)[.(]")
JWT_CLOCK_SKEW = 30  # seconds; PostgREST 12 sets jose's allowedSkew to 30
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


# --------------------------------------------------------------------------------------------------------------
# errors


class ApiError(Exception):
    """An error response: HTTP status, PostgREST's JSON body ``{code, message, details, hint}``, extra headers."""

    def __init__(self, status, code, message, details=None, hint=None, headers=(), reason=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.body = {"code": code, "message": message, "details": details, "hint": hint}
        self.headers = list(headers)
        self.reason = reason  # the status line's reason phrase; PostgREST puts the message there for PTnnn codes


def not_replayed(what):
    return ApiError(501, "REPLAY501", f"postgrest_replay does not replay {what}",
                    hint="Extend tests/postgrest_replay.py, or test this against a real PostgREST")


def pg_error_status(sqlstate, message, authenticated):
    """HTTP status for a PostgreSQL error, as PostgREST 12's ``mapSQLtoHTTP`` (Error.hs) gives it.

    ``authenticated`` is PostgREST's "the request's role is not the anonymous role": it turns 42501 into 403
    instead of 401. Raises of SQLSTATE ``PGRST`` are handled by ``pgrst_raise_error`` before this is asked.
    """
    exact = {"23503": 409, "23505": 409, "25006": 405, "53400": 500, "P0001": 400, "42883": 404, "42P01": 404,
             "42P17": 500}
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate == "21000":  # cardinality_violation: pg-safeupdate's refusal is the client's fault
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate == "42501":
        return 403 if authenticated else 401
    if sqlstate.startswith("PT"):
        return int(sqlstate[2:]) if sqlstate[2:].isdigit() else 500
    by_class = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
                "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
                "P0": 500, "XX": 500}
    return by_class.get(sqlstate[:2], 400)


def pgrst_raise_error(diag):
    """``RAISE SQLSTATE 'PGRST' USING MESSAGE = '{json}', DETAIL = '{json}'``: the function chooses the whole
    response (PostgREST 12's "full response control"); malformed JSON gives PGRST121."""
    hint = ("MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', "
            "'hint'.")
    try:
        body = json.loads(diag.message_primary)
        if not isinstance(body, dict) or not {"code", "message"} <= body.keys():
            raise ValueError
    except ValueError:
        raise ApiError(500, "PGRST121", "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
                       f"Invalid JSON value for MESSAGE: '{diag.message_primary}'", hint) from None
    hint = "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'."
    if diag.message_detail is None:
        raise ApiError(500, "PGRST121", "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
                       "DETAIL is missing in the RAISE statement", hint)
    try:
        detail = json.loads(diag.message_detail)
        status, headers = int(detail["status"]), dict(detail["headers"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(500, "PGRST121", "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
                       f"Invalid JSON value for DETAIL: '{diag.message_detail}'", hint) from None
    return ApiError(status, body["code"], body["message"], body.get("details"), body.get("hint"),
                    headers.items(), detail.get("status_text"))


def database_error(exc, authenticated):
    """The response PostgREST 12 gives for an error the database raised during the request."""
    diag = exc.diag
    if diag.sqlstate is None:
        if not isinstance(exc, psycopg.OperationalError):
            raise exc  # not the database's answer: a bug of the replay
        return ApiError(503, "PGRST000", "Database connection error. Retrying the connection.", str(exc))
    if diag.sqlstate == "PGRST":
        return pgrst_raise_error(diag)
    status = pg_error_status(diag.sqlstate, diag.message_primary or "", authenticated)
    headers = [("WWW-Authenticate", "Bearer")] if status == 401 else []
    reason = diag.message_primary if diag.sqlstate.startswith("PT") else None
    return ApiError(status, diag.sqlstate, diag.message_primary, diag.message_detail, diag.message_hint, headers,
                    reason)


# --------------------------------------------------------------------------------------------------------------
# JWT (HS256)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_for(claims: dict, secret: str) -> str:
    """An HS256 JWT carrying ``claims``, signed with ``secret`` (what an auth service would hand a client)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def _invalid_token(message):
    """PGRST301: the messages are those of PostgREST's JOSE library (``show`` of its error)."""
    description = json.dumps(message)
    return ApiError(401, "PGRST301", message,
                    headers=[("WWW-Authenticate", f'Bearer error="invalid_token", error_description={description}')])


def verify_jwt(token: str, secret: str | None, now: float) -> dict:
    """The claims of an HS256 ``token``, checked as PostgREST 12 checks them (signature, then exp/nbf/iat with 30 s
    of skew). A token sent to a server without a secret is PGRST300 (500: it is the server that is misconfigured)."""
    if secret is None:
        raise ApiError(500, "PGRST300", "Server lacks JWT secret")
    parts = token.split(".")
    if len(parts) != 3:
        raise _invalid_token(f"JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got "
                             f"{len(parts)})")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except ValueError:
        raise _invalid_token("JWSError (CompactDecodeError Base64DecodeError)") from None
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if header.get("alg") != "HS256" or not hmac.compare_digest(signature, expected):
        raise _invalid_token("JWSError JWSInvalidSignature")
    if not isinstance(claims, dict):
        raise _invalid_token("JWTClaimsSetDecodeError")
    if "exp" in claims and now > claims["exp"] + JWT_CLOCK_SKEW:
        raise _invalid_token("JWT expired")
    if "nbf" in claims and now + JWT_CLOCK_SKEW < claims["nbf"]:
        raise _invalid_token("JWTNotYetValid")
    if "iat" in claims and now + JWT_CLOCK_SKEW < claims["iat"]:
        raise _invalid_token("JWTIssuedAtFuture")
    return claims


# --------------------------------------------------------------------------------------------------------------
# schema cache


@dataclass(frozen=True)
class Param:
    name: str  # "" for an unnamed parameter
    type: str  # format_type(), e.g. "double precision"
    required: bool  # no DEFAULT
    variadic: bool


@dataclass(frozen=True)
class Routine:
    """One function of an exposed schema, as PostgREST's schema cache describes it (SchemaCache/Routine.hs)."""

    oid: int
    schema: str
    name: str
    params: tuple
    description: str | None
    volatility: str  # pg_proc.provolatile: "v", "s" or "i"
    returns_set: bool
    returns_composite: bool
    returns_void: bool
    isolation: str | None  # the function's own default_transaction_isolation
    hoisted_settings: tuple  # (name, value) of its SET clauses that PostgREST applies to the transaction

    @property
    def returns_scalar(self):
        return not self.returns_set and not self.returns_composite

    @property
    def returns_set_of_scalar(self):
        return self.returns_set and not self.returns_composite

    @property
    def single_unnamed_param(self):
        """PostgREST passes the whole body, positionally, to a function with one unnamed parameter."""
        return len(self.params) == 1 and self.params[0].name == ""

    def signature(self):
        return f"{self.schema}.{self.name}(" + ", ".join(f"{p.name} => {p.type}" for p in self.params) + ")"


ROUTINES_QUERY = """
SELECT p.oid::int8, n.nspname, p.proname, pg_catalog.obj_description(p.oid, 'pg_proc'), p.provolatile::text,
       p.proretset, (rt.typtype = 'c' OR p.prorettype = 'pg_catalog.record'::regtype),
       p.prorettype = 'pg_catalog.void'::regtype,
       coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'),
       array(SELECT pg_catalog.format_type(t, NULL)
             FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY AS a(t, i) ORDER BY i),
       p.pronargdefaults, coalesce(p.proconfig, '{}')
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_type rt ON rt.oid = p.prorettype
WHERE n.nspname = ANY(%s) AND p.prokind = 'f'
"""
# what the OpenAPI output lists (openapi-mode follow-privileges): what the request's role may execute, read afresh
ACCESSIBLE_ROUTINES_QUERY = ROUTINES_QUERY + "AND has_function_privilege(p.oid, 'execute') ORDER BY p.proname, p.oid"
SCHEMA_COMMENT_QUERY = "SELECT pg_catalog.obj_description(%s::regnamespace, 'pg_namespace')"

# PostgREST 12's queryRoleSettings (Config/Database.hs): database-independent settings (pg_roles.rolconfig) of the
# roles the authenticator is a direct member of, that it may set
ROLE_SETTINGS_QUERY = """
WITH role_setting AS (
  SELECT r.rolname, unnest(r.rolconfig) AS setting
  FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
  WHERE m.member = current_user::regrole::oid
), kv_settings AS (
  SELECT rolname, substr(setting, 1, strpos(setting, '=') - 1) AS key,
         lower(substr(setting, strpos(setting, '=') + 1)) AS value
  FROM role_setting
)
SELECT kv.rolname, kv.key, kv.value
FROM kv_settings kv
JOIN pg_catalog.pg_settings ps ON ps.name = kv.key
  AND (ps.context = 'user' OR has_parameter_privilege(current_user::regrole::oid, ps.name, 'set'))
ORDER BY kv.rolname, kv.key
"""


def _settings(pairs):
    """``name=value`` strings (proconfig) as a dict."""
    return dict(s.split("=", 1) for s in pairs)


def _routine(row):
    oid, schema, name, description, volatility, returns_set, composite, void, names, modes, types, ndefaults, \
        config = row
    modes = modes or ["i"] * len(types)
    inputs = [(names[i] if i < len(names) else "", types[i], mode) for i, mode in enumerate(modes) if mode in "ibv"]
    params = tuple(Param(n, t, i < len(inputs) - ndefaults, mode == "v") for i, (n, t, mode) in enumerate(inputs))
    settings = _settings(config)
    return Routine(oid, schema, name, params, description, volatility, returns_set, composite, void,
                   settings.get("default_transaction_isolation"),
                   tuple((k, v) for k, v in settings.items() if k in HOISTED_TX_SETTINGS))


def load_routines(cur, schemas):
    """Every function of ``schemas``, keyed by (schema, name): overloads share a key."""
    routines = {}
    for row in cur.execute(ROUTINES_QUERY, (list(schemas),)):
        routine = _routine(row)
        routines.setdefault((routine.schema, routine.name), []).append(routine)
    return routines


@dataclass
class SchemaCache:
    routines: dict  # (schema, name) -> [Routine]
    role_settings: dict  # role -> [(setting, value)], default_transaction_isolation excluded
    role_isolation: dict  # role -> default_transaction_isolation

    @classmethod
    def load(cls, conn, schemas):
        with conn.cursor() as cur:
            routines = load_routines(cur, schemas)
            role_settings, role_isolation = {}, {}
            for role, key, value in cur.execute(ROLE_SETTINGS_QUERY):
                if key == "default_transaction_isolation":
                    role_isolation[role] = value
                else:
                    role_settings.setdefault(role, []).append((key, value))
        return cls(routines, role_settings, role_isolation)


def _levenshtein(a, b):
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def _closest(candidates, wanted, min_score=0.33):
    """Stand-in for the FuzzySet lookup behind PostgREST's "Perhaps you meant ..." hints: the candidate with the
    best Levenshtein similarity, if it reaches FuzzySet's default minimum score. Hints are approximate."""
    scored = [(1 - _levenshtein(c.lower(), wanted.lower()) / max(len(c), len(wanted), 1), c) for c in candidates]
    best = max(scored, default=None)
    return best[1] if best and best[0] >= min_score else None


def _params_text(names):
    return "(" + ", ".join(sorted(names)) + ")"


def no_function_error(cache, schema, name, keys, is_post):
    """PGRST202, worded as PostgREST 12 words it (keys in sorted order, as its Set gives them)."""
    func = f"{schema}.{name}"
    listed = ", ".join(sorted(keys))
    with_params = (" with parameter" + ("s " if len(keys) > 1 else " ") + listed) if keys else " without parameters"
    details = (f"Searched for the function {func}{with_params}"
               f"{' or with a single unnamed json/jsonb parameter' if is_post else ''}, "
               "but no matches were found in the schema cache.")
    overloads = cache.routines.get((schema, name), [])
    if overloads:
        match = _closest([_params_text(p.name for p in r.params) for r in overloads], _params_text(keys))
        hint = match and f"Perhaps you meant to call the function {func}{match}"
    else:
        match = _closest([n for (s, n) in cache.routines if s == schema], name)
        hint = match and f"Perhaps you meant to call the function {schema}.{match}"
    message = f"Could not find the function {func}" + (f"({listed})" if keys else " without parameters")
    return ApiError(404, "PGRST202", message + " in the schema cache", details, hint)


def find_routine(cache, schema, name, keys, is_post):
    """PostgREST 12's ``findProc`` (Plan.hs): the overload whose required parameters are all sent and whose
    parameters include every key sent; else a single-unnamed-json-parameter function, for a POST."""

    def matches(routine):
        if not routine.params:
            return not keys
        required = {p.name for p in routine.params if p.required}
        return required <= keys <= {p.name for p in routine.params}

    def takes_whole_body(routine):
        return is_post and routine.single_unnamed_param and routine.params[0].type in ("json", "jsonb")

    overloads = cache.routines.get((schema, name), [])
    matched = [r for r in overloads if matches(r)]
    fallback = [r for r in overloads if not matches(r) and takes_whole_body(r)]
    candidates = matched or fallback
    if not candidates:
        raise no_function_error(cache, schema, name, keys, is_post)
    if len(candidates) > 1:
        raise ApiError(300, "PGRST203", "Could not choose the best candidate function between: "
                       + ", ".join(r.signature() for r in candidates), None,
                       "Try renaming the parameters or the function itself in the database so function overloading "
                       "can be resolved")
    return candidates[0]


# --------------------------------------------------------------------------------------------------------------
# statements


def call_statement(routine, keys, payload, body_is_object):
    """(statement, params): the call as PostgREST 12 builds it (``callPlanToQuery`` inside ``prepareCall``), with
    the JSON ``payload`` as its parameter when the call reads it. Only the parameters whose names were sent are
    passed, by name; a JSON array payload is read with json_to_recordset, and ``LIMIT 1`` keeps its first element,
    as PostgREST does."""
    function = sql.SQL("{}.{}").format(sql.Identifier(routine.schema), sql.Identifier(routine.name))
    scalar = routine.returns_scalar or routine.returns_set_of_scalar

    def call_it(arguments):
        if scalar:
            return sql.SQL("(SELECT {}({}) pgrst_scalar) pgrst_call").format(function, arguments)
        return sql.SQL("{}({}) pgrst_call").format(function, arguments)

    sent = [p for p in routine.params if p.name in keys]
    params = (Json(payload, dumps=lambda text: text),)  # the body text as it came, typed json
    if routine.single_unnamed_param:
        source = sql.SQL("FROM ") + call_it(sql.SQL("%s::") + sql.SQL(routine.params[0].type))
    elif not sent:
        source = sql.SQL("FROM ") + call_it(sql.SQL(""))
        params = ()
    else:
        names = sql.SQL(", ").join(sql.Identifier(p.name) for p in sent)
        typed = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(p.name), sql.SQL(p.type)) for p in sent)
        arguments = sql.SQL(", ").join(
            sql.SQL("{}{} := pgrst_body.{}").format(sql.SQL("VARIADIC " if p.variadic else ""),
                                                     sql.Identifier(p.name), sql.Identifier(p.name))
            for p in sent)
        to_record = "json_to_record" if body_is_object else "json_to_recordset"
        source = sql.SQL("FROM (SELECT %s AS json_data) pgrst_payload, LATERAL (SELECT {} FROM {}"
                         "(pgrst_payload.json_data) AS _({}) LIMIT 1) pgrst_body, LATERAL ").format(
            names, sql.SQL(to_record), typed) + call_it(arguments)
    columns = sql.SQL("pgrst_call.pgrst_scalar" if scalar else "pgrst_call.*")
    if routine.returns_set_of_scalar:
        body = "coalesce(json_agg(_postgrest_t.pgrst_scalar), '[]')"
    elif routine.returns_scalar:
        body = "coalesce(json_agg(_postgrest_t.pgrst_scalar)->0, 'null')"
    elif routine.returns_set:
        body = "coalesce(json_agg(_postgrest_t), '[]')"
    else:  # a single composite value is answered as an object
        body = "coalesce(json_agg(_postgrest_t)->0, 'null')"
    page_total = "pg_catalog.count(_postgrest_t)" if routine.returns_set else "1"
    statement = sql.SQL(
        "WITH pgrst_source AS (SELECT {} {}) SELECT null::bigint AS total_result_set, {} AS page_total, {} AS body, "
        "nullif(current_setting('response.headers', true), '') AS response_headers, "
        "nullif(current_setting('response.status', true), '') AS response_status, '' AS response_inserted "
        "FROM (SELECT \"pgrst_source\".* FROM \"pgrst_source\") _postgrest_t"
    ).format(columns, source, sql.SQL(page_total), sql.SQL(body))
    return statement, params


def locals_statement(settings):
    """``SELECT set_config(name, value, true), ...`` for (name, value) pairs, values as parameters."""
    calls = sql.SQL(", ").join(sql.SQL("set_config({}, %s, true)").format(sql.Literal(name)) for name, _ in settings)
    return sql.SQL("SELECT ") + calls, tuple(value for _, value in settings)


def _compact_json(value):
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


@dataclass
class Statement:
    sql: str
    params: tuple = ()


@dataclass
class Exchange:
    """One request the replay answered, and the statements it ran for it, in order."""

    method: str
    path: str
    status: int | None = None
    statements: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# the server


@dataclass
class Request:
    """What the handler parsed out of one HTTP request."""

    method: str
    path: str
    query: list
    headers: list  # (lower-case name, value)
    body: bytes

    def header(self, name):
        return next((v for k, v in reversed(self.headers) if k == name), None)


class PostgrestReplay:
    """The replay server. ``start()`` returns the base URL; ``stop()`` (or leaving ``with``) shuts it down."""

    def __init__(self, conninfo, db_schemas, db_anon_role=None, jwt_secret=None, db_pre_request=None,
                 db_extra_search_path=("public",), pool_size=10):
        if not db_schemas:
            raise ValueError("db_schemas needs at least one schema")
        self.conninfo = make_conninfo(conninfo, application_name=f"PostgREST {POSTGREST_VERSION}")
        self.db_schemas = list(db_schemas)
        self.db_anon_role = db_anon_role
        self.jwt_secret = jwt_secret
        self.db_pre_request = db_pre_request
        self.db_extra_search_path = list(db_extra_search_path)
        self.exchanges = []  # every Exchange, in the order the requests finished
        self.url = None
        self._pool_slots = threading.BoundedSemaphore(pool_size)
        self._idle = queue.LifoQueue()
        self._cache = None
        self._reloads = 0
        self._reloaded = threading.Condition()
        self._stopping = threading.Event()
        self._listener = None
        self._httpd = None

    # -- life cycle -----------------------------------------------------------------------------------------------
    def start(self):
        self._reload()
        self._reloads = 0  # the first load is not a reload
        listening = threading.Event()
        self._listener = threading.Thread(target=self._listen, args=(listening,), name="pgrst-listener",
                                          daemon=True)
        self._listener.start()
        if not listening.wait(10):
            raise RuntimeError("postgrest_replay: the LISTEN connection did not come up")
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="pgrst-http", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        return self.url

    def stop(self):
        self._stopping.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._listener:
            self._listener.join(5)
        self._close_idle()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- schema cache ---------------------------------------------------------------------------------------------
    @property
    def reload_count(self):
        """How many times the schema cache was reloaded after a NOTIFY since start()."""
        with self._reloaded:
            return self._reloads

    def wait_for_reload(self, after, timeout=10.0):
        """Block until more than ``after`` reloads have happened; returns the new count (AssertionError on timeout).
        Read ``reload_count`` before sending the NOTIFY and pass it here."""
        with self._reloaded:
            if not self._reloaded.wait_for(lambda: self._reloads > after, timeout):
                raise AssertionError(f"no schema cache reload within {timeout} s (still {self._reloads})")
            return self._reloads

    def _reload(self):
        """Reload function signatures and role settings, as PostgREST's schema cache load does; then drop the idle
        connections, as PostgREST flushes its pool after a load."""
        with self._connection() as conn:
            cache = SchemaCache.load(conn, self.db_schemas)
        self._cache = cache
        self._close_idle()
        with self._reloaded:
            self._reloads += 1
            self._reloaded.notify_all()

    def _listen(self, listening):
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            listening.set()
            while not self._stopping.is_set():
                for notify in conn.notifies(timeout=0.2):
                    # PostgREST's Listener: an empty payload or 'reload schema' reloads the schema cache;
                    # 'reload config' re-reads the in-database configuration, of which only role settings matter here
                    if notify.payload in ("", "reload schema", "reload config"):
                        self._reload()

    # -- connection pool ------------------------------------------------------------------------------------------
    @contextmanager
    def _connection(self):
        """A pooled connection as the authenticator, in autocommit so that BEGIN/COMMIT are ours to send."""
        self._pool_slots.acquire()
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = psycopg.connect(self.conninfo, autocommit=True)
                for json_type in ("json", "jsonb"):  # keep the server's JSON text as it is
                    conn.adapters.register_loader(json_type, TextLoader)
            try:
                yield conn
            finally:
                # back to the pool only if it is sound and idle: a lost connection or a stop closes it
                if conn.info.transaction_status == TransactionStatus.IDLE and not self._stopping.is_set():
                    self._idle.put(conn)
                else:
                    conn.close()
        finally:
            self._pool_slots.release()

    def _close_idle(self):
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    # -- requests -------------------------------------------------------------------------------------------------
    def handle(self, request):
        """Answer one request: (status, reason phrase or None, headers, body bytes); log it as an Exchange."""
        exchange = Exchange(request.method, request.path)
        reason = None
        try:
            status, headers, body = self._answer(request, exchange)
        except ApiError as err:
            status, reason, body = err.status, err.reason, json.dumps(err.body).encode()
            headers = [("Content-Type", JSON_CONTENT_TYPE), *err.headers]
        except Exception:  # a bug of the replay: answer it, so that the failing test shows it
            status, reason, headers = 500, None, [("Content-Type", JSON_CONTENT_TYPE)]
            body = json.dumps({"code": "REPLAY500", "message": "postgrest_replay failed",
                               "details": traceback.format_exc(), "hint": None}).encode()
        exchange.status = status
        self.exchanges.append(exchange)
        return status, reason, headers, body

    def _answer(self, request, exchange):
        path = request.path
        if path != "/" and not (path.startswith("/rpc/") and len(path) > len("/rpc/")):
            raise not_replayed(f"the path {path} (tables and views)")
        if request.method not in ("GET", "HEAD", "POST"):
            if request.method in ("PUT", "PATCH", "DELETE") and path != "/":
                raise ApiError(405, "PGRST101", f"Cannot use the {request.method} method on RPC")
            raise not_replayed(f"the {request.method} method on {path}")
        role, claims = self._authenticate(request)
        schema = self._schema(request)
        if path == "/":
            if request.method == "POST":
                raise not_replayed("POST on the root endpoint")
            return self._openapi(request, exchange, schema, role, claims)
        return self._call(request, exchange, schema, path[len("/rpc/"):], role, claims)

    def _authenticate(self, request):
        """(role, claims) for the request: PostgREST's Auth.hs. The claims always carry the role used."""
        authorization = request.header("authorization") or ""
        token = next((authorization[len(p):] for p in ("Bearer ", "bearer ") if authorization.startswith(p)), "")
        claims = verify_jwt(token, self.jwt_secret, time.time()) if token else {}
        role = claims.get("role")
        if role is None:
            role = self.db_anon_role
        elif not isinstance(role, str):
            role = json.dumps(role)
        if role is None:
            raise ApiError(401, "PGRST302", "Anonymous access is disabled", headers=[("WWW-Authenticate", "Bearer")])
        return role, {**claims, "role": role}

    def _schema(self, request):
        """The schema of the request: Accept-Profile (GET/HEAD) or Content-Profile (others) chooses among
        db_schemas, the first by default; with a single schema PostgREST ignores both headers."""
        if len(self.db_schemas) == 1:
            return self.db_schemas[0]
        wanted = request.header("accept-profile" if request.method in ("GET", "HEAD") else "content-profile")
        if wanted is None:
            return self.db_schemas[0]
        if wanted not in self.db_schemas:
            raise ApiError(406, "PGRST106", "The schema must be one of the following: " + ", ".join(self.db_schemas))
        return wanted

    def _check_media_types(self, request):
        content_type = request.header("content-type")
        if request.method == "POST" and content_type and content_type.split(";")[0].strip() != "application/json":
            raise not_replayed(f"request bodies of type {content_type}")
        accept = request.header("accept")
        accepted = [a.split(";")[0].strip() for a in accept.split(",")] if accept else ["*/*"]
        if not {"application/json", "*/*", "application/*"} & set(accepted):
            raise not_replayed(f"responses of type {accept}")

    def _arguments(self, request):
        """(keys, JSON payload text, payload is an object) of an RPC call: PostgREST's ApiRequest payload rules."""
        if request.method == "POST":
            text = request.body.decode("utf-8", "replace").strip() or "{}"  # an empty body calls without arguments
            try:
                payload = json.loads(text, parse_constant=_reject_constant)
            except ValueError:
                raise ApiError(400, "PGRST102", "Empty or invalid json") from None
            if isinstance(payload, dict):
                return set(payload), text, True
            if isinstance(payload, list) and payload:
                keys = set(payload[0]) if isinstance(payload[0], dict) else None
                if keys is None or any(not isinstance(o, dict) or set(o) != keys for o in payload):
                    raise ApiError(400, "PGRST102", "All object keys must match")
                return keys, text, False
            return set(), "[]", False  # an empty array or a bare JSON value: no arguments
        arguments = {}
        for key, value in request.query:
            if key in RESERVED_QUERY_KEYS or FILTER_VALUE.match(value):
                raise not_replayed(f"the query parameter {key}={value} (filters, select, order, limits)")
            arguments[key] = value  # a repeated key: the last value, as PostgREST's JSON object ends up with
        return set(arguments), json.dumps(arguments), True

    def _call(self, request, exchange, schema, name, role, claims):
        self._check_media_types(request)
        keys, payload, is_object = self._arguments(request)
        cache = self._cache
        routine = find_routine(cache, schema, name, keys, request.method == "POST")
        read_only = request.method != "POST" or routine.volatility in ("s", "i")
        isolation = routine.isolation or cache.role_isolation.get(role) or "read committed"
        [[row]] = self._transaction(request, exchange, schema, role, claims, read_only, isolation,
                                    routine.hoisted_settings, [call_statement(routine, keys, payload, is_object)])
        _total, page_total, body, guc_headers, guc_status, _inserted = row
        upper = page_total - 1
        headers = [("Content-Range", f"0-{upper}/*" if upper >= 0 else "*/*")]
        status, headers = _apply_response_gucs(200, headers, guc_headers, guc_status)
        if routine.returns_void:
            return 204, headers, b""
        headers.insert(0, ("Content-Type", JSON_CONTENT_TYPE))
        return status, headers, b"" if request.method == "HEAD" else body.encode()

    def _transaction(self, request, exchange, schema, role, claims, read_only, isolation, hoisted, queries):
        """Run one request's transaction: BEGIN, the set_config statement, the pre-request function, ``queries``
        ((statement, params) pairs), COMMIT. Returns the rows of each query."""
        search_path = ", ".join(sql.Identifier(s).as_string(None) for s in [schema, *self.db_extra_search_path])
        headers = {k: v for k, v in request.headers if k != "cookie"}
        cookies = SimpleCookie()
        for value in (v for k, v in request.headers if k == "cookie"):
            cookies.load(value)
        settings = [("search_path", search_path), *self._cache.role_settings.get(role, []), ("role", role),
                    ("request.jwt.claims", _compact_json(claims)), ("request.method", request.method),
                    ("request.path", request.path), ("request.headers", _compact_json(headers)),
                    ("request.cookies", _compact_json({k: m.value for k, m in cookies.items()})), *hoisted]
        level = ISOLATION_LEVELS.get(isolation, "READ COMMITTED")
        preamble = [(sql.SQL(f"BEGIN ISOLATION LEVEL {level} {'READ ONLY' if read_only else 'READ WRITE'}"), ()),
                    locals_statement(settings)]
        if self.db_pre_request:
            preamble.append((sql.SQL("SELECT {}()").format(sql.Identifier(*self.db_pre_request.split("."))), ()))
        try:
            with self._connection() as conn:
                try:
                    for query, params in preamble:
                        exchange.statements.append(Statement(query.as_string(conn), params))
                        conn.execute(query, params)
                    results = []
                    for query, params in queries:
                        exchange.statements.append(Statement(query.as_string(conn), params))
                        results.append(conn.execute(query, params).fetchall())
                    exchange.statements.append(Statement("COMMIT"))
                    conn.execute("COMMIT")
                    return results
                except psycopg.Error:
                    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                        exchange.statements.append(Statement("ROLLBACK"))
                        conn.execute("ROLLBACK")
                    raise
        except psycopg.Error as exc:
            raise database_error(exc, authenticated=role != self.db_anon_role) from exc

    def _openapi(self, request, exchange, schema, role, claims):
        """A minimal OpenAPI 2.0 document of the schema's functions, read in the request's own transaction."""
        rows, [[comment]] = self._transaction(
            request, exchange, schema, role, claims, True, "read committed", (),
            [(sql.SQL(ACCESSIBLE_ROUTINES_QUERY), ([schema],)), (sql.SQL(SCHEMA_COMMENT_QUERY), (schema,))])
        body = openapi_document(schema, comment, [_routine(r) for r in rows], request.header("host"))
        headers = [("Content-Type", "application/openapi+json; charset=utf-8")]
        return 200, headers, b"" if request.method == "HEAD" else json.dumps(body).encode()


def _reject_constant(name):
    """json.loads hook: NaN and Infinity are not JSON (PostgREST's parser refuses them)."""
    raise ValueError(f"not JSON: {name}")


def _apply_response_gucs(status, headers, guc_headers, guc_status):
    """response.status / response.headers set by the function override PostgREST's own (PGRST111/112 if bad)."""
    if guc_headers is not None:
        try:
            pairs = json.loads(guc_headers)
            if not isinstance(pairs, list) or not all(
                    isinstance(p, dict) and len(p) == 1 and isinstance(next(iter(p.values())), str) for p in pairs):
                raise ValueError
        except ValueError:
            raise ApiError(500, "PGRST111", "response.headers guc must be a JSON array composed of objects with a "
                           "single key and a string value") from None
        overriding = [next(iter(p.items())) for p in pairs]
        names = {k.lower() for k, _ in overriding}
        headers = overriding + [(k, v) for k, v in headers if k.lower() not in names]
    if guc_status is not None:
        if not guc_status.isdigit() or not 100 <= int(guc_status) <= 599:
            raise ApiError(500, "PGRST112", "response.status guc must be a valid status code")
        status = int(guc_status)
    return status, headers


def _swagger_type(pg_type):
    """PostgREST's toSwaggerType: JSON types have none; arrays, numbers, booleans map; the rest are strings."""
    if pg_type.endswith("[]"):
        return "array"
    return {"json": None, "jsonb": None, "boolean": "boolean", "smallint": "integer", "integer": "integer",
            "bigint": "integer", "numeric": "number", "real": "number", "double precision": "number"}.get(
        pg_type, "string")


def _typed(pg_type, **fields):
    swagger = _swagger_type(pg_type)
    return {**fields, **({"type": swagger} if swagger else {}), "format": pg_type}


def openapi_document(schema, schema_comment, routines, host):
    """The parts of PostgREST 12's OpenAPI 2.0 output (OpenAPI.hs) that describe RPC endpoints: per function a
    path ``/rpc/<name>`` with GET and POST, summary = first line of its COMMENT, description = the rest."""
    title, _, description = (schema_comment or "").partition("\n")
    paths = {"/": {"get": {"tags": ["Introspection"], "summary": "OpenAPI description (this document)",
                           "produces": ["application/openapi+json", "application/json"],
                           "responses": {"200": {"description": "OK"}}}}}
    for routine in routines:
        summary, _, rest = (routine.description or "").partition("\n")
        operation = {"tags": [f"(rpc) {routine.name}"], "produces": ["application/json",
                                                                     "application/vnd.pgrst.object+json"],
                     "responses": {"200": {"description": "OK"}}}
        if routine.description is not None:
            operation["summary"] = summary
            if rest.lstrip("\n"):
                operation["description"] = rest.lstrip("\n")
        properties = {p.name: _typed(p.type) for p in routine.params}
        body_schema = {"type": "object", "properties": properties,
                       **({"required": [p.name for p in routine.params if p.required]}
                          if any(p.required for p in routine.params) else {})}
        paths[f"/rpc/{routine.name}"] = {
            "get": {**operation, "parameters": [_typed(p.type, **{"in": "query", "name": p.name,
                                                                    "required": p.required})
                                                 for p in routine.params]},
            "post": {**operation, "parameters": [{"in": "body", "name": "args", "required": True,
                                                   "schema": body_schema},
                                                  {"$ref": "#/parameters/preferParams"}]},
        }
    return {
        "swagger": "2.0",
        "info": {"title": title or "PostgREST API",
                 "description": description.lstrip("\n") or "This is a dynamic API generated by PostgREST",
                 "version": POSTGREST_VERSION},
        "host": host, "basePath": "/", "schemes": ["http"],
        "consumes": ["application/json", "application/vnd.pgrst.object+json;nulls=stripped",
                     "application/vnd.pgrst.object+json", "text/csv"],
        "produces": ["application/json", "application/vnd.pgrst.object+json;nulls=stripped",
                     "application/vnd.pgrst.object+json", "text/csv"],
        "paths": paths,
        "parameters": {"preferParams": {"name": "Prefer", "description": "Preference", "required": False,
                                        "in": "header", "type": "string", "enum": ["params=single-object"]}},
        "definitions": {},
    }


def _handler_class(replay):
    class Handler(BaseHTTPRequestHandler):
        """Turns each HTTP request into a ``Request`` for the replay, and its answer back into HTTP."""

        protocol_version = "HTTP/1.1"  # keep-alive, as PostgREST (Warp) speaks it
        server_version = f"postgrest/{POSTGREST_VERSION}"
        sys_version = ""

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            url = urlsplit(self.path)
            request = Request(self.command, url.path, parse_qsl(url.query, keep_blank_values=True),
                              [(k.lower(), v) for k, v in self.headers.items()], self.rfile.read(length))
            status, reason, headers, body = replay.handle(request)
            reason = reason and reason.encode("latin-1", "replace").decode("latin-1").splitlines()[0]
            self.send_response(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

        def log_message(self, *args):  # quiet: pytest shows failures, not access logs
            pass

    return Handler


# --------------------------------------------------------------------------------------------------------------
# test helpers


@dataclass(frozen=True)
class ApiRoles:
    """PostgREST's three roles, with names unique to one test (roles are cluster-wide)."""

    authenticator: str  # LOGIN NOINHERIT, member of the two others
    anon: str  # NOLOGIN: anonymous requests
    user: str  # NOLOGIN: requests whose JWT says {"role": user}


@contextmanager
def api_roles(conn, prefix="pgrst"):
    """Create the roles on the server of ``conn`` (a superuser connection in autocommit) and drop them after:
    what they own or were granted in ``conn``'s database goes first (DROP OWNED BY)."""
    suffix = uuid.uuid4().hex[:8]
    roles = ApiRoles(f"{prefix}_authenticator_{suffix}", f"{prefix}_anon_{suffix}", f"{prefix}_user_{suffix}")
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(sql.Identifier(roles.authenticator)))
    for role in (roles.anon, roles.user):
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(roles.authenticator)))
    try:
        yield roles
    finally:
        for role in (roles.authenticator, roles.anon, roles.user):
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@contextmanager
def postgrest_server(pg_server, dbname, authenticator, schemas, anon_role=None, jwt_secret=None, pre_request=None,
                     **options):
    """A running ``PostgrestReplay`` for database ``dbname`` of the harness's ``pg_server``, logged in as
    ``authenticator``; ``server.url`` is its base URL. ``options`` go to ``PostgrestReplay``."""
    conninfo = make_conninfo(pg_server.dsn(dbname), user=authenticator)
    with PostgrestReplay(conninfo, schemas, db_anon_role=anon_role, jwt_secret=jwt_secret, db_pre_request=pre_request,
                         **options) as server:
        yield server
