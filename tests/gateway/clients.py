"""Real Python clients against `dpq serve` (run by tests/integration/gateway.rs).

usage: clients.py PORT USER PASSWORD OTHER_USER OTHER_PASSWORD

psycopg 3 uses the extended query protocol (Parse/Bind/Describe/Execute) for
every execute with parameters; `prepare=True` makes a named prepared
statement. pandas reads through SQLAlchemy's postgresql+psycopg dialect, which
inspects the server on connect (version, current_schema, standard strings).
"""

import sys

import pandas as pd
import psycopg
import sqlalchemy

port, user, password, other, other_password = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
dsn = f"host=127.0.0.1 port={port} dbname=dpq user={user} password={password}"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what.split(":")[0])


notices = []
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    cur = conn.cursor()

    # a parameter, server-side binding: the extended protocol
    cur.execute("SET dpq.epsilon = 0.2")
    cur.execute("SELECT chat_kind, COUNT(*) AS n FROM messages WHERE length > %s GROUP BY chat_kind", (5,))
    cols = [d.name for d in cur.description]
    rows = cur.fetchall()
    check(cols == ["chat_kind", "n", "n_stddev", "n_ci_low", "n_ci_high"], f"extended protocol columns: {cols}")
    check(all(r[3] <= r[1] <= r[4] for r in rows if r[1] is not None), f"value inside its interval: {rows}")
    check(any("spent ε=0.2" in n for n in notices), f"privacy metadata as notices: {notices}")

    # a named prepared statement, executed twice with different parameters
    q = "SELECT AVG(length) AS avg_len FROM messages WHERE chat_kind = %s"
    a = cur.execute(q, ("group",), prepare=True).fetchall()
    b = cur.execute(q, ("private",), prepare=True).fetchall()
    check(len(a) == 1 and len(b) == 1 and cur.description[0].name == "avg_len", f"prepared statement: {a} {b}")

    # a parameter cannot become SQL
    try:
        cur.execute("SELECT COUNT(*) AS n FROM messages WHERE chat_kind = %s", ("x' OR '1'='1",))
        check(cur.fetchall()[0][0] is not None, "injection stays a string: answered as a literal")
    except psycopg.Error as e:
        raise AssertionError(f"a quoted parameter failed: {e}")

    # SQLSTATE classes
    try:
        cur.execute("SELECT user_id FROM messages")
        raise AssertionError("a per-person listing must be refused")
    except psycopg.errors.InsufficientPrivilege as e:
        check(e.sqlstate == "42501" and e.diag.message_hint, f"refusal is 42501 with a hint: {e.sqlstate}")
    try:
        cur.execute("SELEC 1")
        raise AssertionError("a syntax error must fail")
    except psycopg.errors.SyntaxError as e:
        check(e.sqlstate == "42601", f"syntax error is 42601: {e.sqlstate}")

    # SHOW through the extended protocol
    cur.execute("SHOW dpq.epsilon")
    check(cur.fetchone()[0] == "0.2", "SHOW dpq.epsilon")

# transactions (psycopg's default: BEGIN before the first statement)
with psycopg.connect(dsn) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) AS n FROM calls")
        check(len(cur.fetchall()) == 1, "a query inside BEGIN … COMMIT")
    conn.commit()

# another analyst runs out of quota (0.3) while this one goes on
with psycopg.connect(f"host=127.0.0.1 port={port} dbname=dpq user={other} password={other_password}", autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("SET dpq.epsilon = 0.25")
    cur.execute("SELECT COUNT(*) AS x FROM payments")
    try:
        cur.execute("SELECT COUNT(*) AS y FROM payments")
        raise AssertionError("the quota must be exhausted")
    except psycopg.errors.ConfigurationLimitExceeded as e:
        check(e.sqlstate == "53400" and "quota" in str(e), f"quota exhausted is 53400: {e}")

# pandas through SQLAlchemy
engine = sqlalchemy.create_engine(f"postgresql+psycopg://{user}:{password}@127.0.0.1:{port}/dpq")
with engine.connect() as c:
    df = pd.read_sql(sqlalchemy.text("SELECT kind, COUNT(*) AS n FROM calls GROUP BY kind"), c)
    check(list(df.columns) == ["kind", "n", "n_stddev", "n_ci_low", "n_ci_high"], f"pandas.read_sql: {list(df.columns)}")
    names = sqlalchemy.inspect(c).get_table_names()
    check({"messages", "users", "calls"} <= set(names), f"SQLAlchemy sees the tables: {names}")

print("all client checks passed")
