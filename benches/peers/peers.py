#!/usr/bin/env python3
"""Time dpq's end-to-end benchmark questions on peer systems (DuckDB, OpenDP).

Written against: Python 3.11, duckdb 2.0.1, opendp 0.14.2 with polars 1.32.0
(the exact polars that opendp 0.14.x pins; OpenDP's Rust core embeds its own
polars and refuses plans from another version), pyarrow 26.

Interface (benches/e2e.rs spawns this and parses stdout):

  python peers.py --system duckdb|opendp --variant plain|bounded
                  --question emoji|hour|cohort_mean --data DIR [--threads N]
                  [--groups 4] [--rows-per-group 20] [--length-lo 0]
                  [--length-hi 2000] [--epsilon 1]

It prints ONE line of JSON: {"seconds": S, "rows": R[, "note": "..."]}.
S is the wall time of the query only (after imports and connection setup,
but including reading DIR/tables/<table>/*.parquet); R is the number of
result rows. An unavailable system/variant exits 2 with a message on stderr.
--threads N: DuckDB `SET threads=N`; polars/OpenDP read POLARS_MAX_THREADS,
which is therefore set from argv before anything imports polars.
PEERS_DEBUG=1 also prints the results (and OpenDP's noise scales) to stderr.

Questions: emoji = messages per emoji (emoji IS NOT NULL); hour = messages per
hour of day of ts (UTC, 0..23); cohort_mean = mean message length per
users.age_group (messages JOIN users ON user_id).

Bounding (dpq's per-person contribution bounds, G = --groups,
K = --rows-per-group, [lo, hi] = --length-lo/--length-hi):
* duckdb plain: the plain SQL, no bounding, no noise.
* duckdb bounded: the bounding written by hand, no noise (the "cost of
  bounding" floor). emoji/hour: count c per (user_id, key); keep at most G
  keys per person, chosen by ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY
  hash(user_id, key, 12345)) <= G; clamp to LEAST(c, K); SUM per key.
  cohort_mean: per (user_id, age_group) c = COUNT(*), s = SUM(length clamped
  to [lo, hi]); kept = LEAST(c, K), sum_kept = s * kept / c; per age_group
  SUM(sum_kept) / SUM(kept).
* opendp bounded: OpenDP's polars Context, pure epsilon-DP, the same G, K,
  [lo, hi] and public key sets via .with_keys() (emoji from emoji_catalog if
  present, else messages; hours 0..23; the five age groups). OpenDP cannot
  express dpq's bounding exactly, so PEERS_OPENDP_TRUNCATION picks one of:
  - declared (default): the bounding above is done in polars (per-person
    keyed hash: polars' pl.struct(user_id, key).hash(12345), not DuckDB's
    hash, so a different but equally random choice of keys), the per-person
    table is handed to OpenDP with dp.unit_of(contributions=[dp.polars.Bound(
    by=[key], per_group=1, num_groups=G)]) (1 group for cohort_mean) and
    OpenDP adds the noise: dp.sum((0, K)) of the clamped counts, and for
    cohort_mean dp.sum of sum_kept and of kept, divided afterwards. Same
    bounded data and same noise scale as dpq, but OpenDP takes the bounds on
    trust (they hold by construction).
  - native: OpenDP's own, verified truncation on the message rows,
    dp.unit_of(contributions=1, identifier="user_id") then
    .truncate_per_group(K, by=[key]).truncate_num_groups(G, by=[key],
    keep="first") and dp.len(); cohort_mean .truncate_per_group(K) and
    dp.mean((lo, hi)). Differs from dpq: keep="sample" fails in 0.14.2
    (struct with two fields of one name) and would rank keys by one global
    hash anyway; keep="first" keeps each person's lowest keys, and only G-1
    of them (polars' dense rank starts at 1 while OpenDP calibrates for G);
    cohort_mean keeps a random K rows per person instead of scaling.
  Both need a Margin max_length for sums (number of people for per-person
  rows; a loose 1e9 for raw rows). OpenDP's core cannot deserialize a
  Parquet scan, so the files are read eagerly with polars inside the timed
  region; OpenDP's scale search in release() costs ~0.7 s whatever the data.
"""
import os
import sys


def _argv_threads(argv):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


_THREADS = _argv_threads(sys.argv[1:])
if _THREADS:
    os.environ["POLARS_MAX_THREADS"] = _THREADS  # before polars is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

AGE_GROUPS = ["00s", "90s", "80s", "70s", "55+"]
HASH_SEED = 12345


def die(msg):
    print(f"peers.py: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_args():
    p = argparse.ArgumentParser(description="time peer systems on dpq's benchmark questions")
    p.add_argument("--system", required=True, choices=["duckdb", "opendp"])
    p.add_argument("--variant", required=True, choices=["plain", "bounded"])
    p.add_argument("--question", required=True, choices=["emoji", "hour", "cohort_mean"])
    p.add_argument("--data", required=True)
    p.add_argument("--threads", type=int)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--rows-per-group", type=int, default=20)
    p.add_argument("--length-lo", type=int, default=0)
    p.add_argument("--length-hi", type=int, default=2000)
    p.add_argument("--epsilon", type=float, default=1.0)
    a = p.parse_args()
    if not os.path.isdir(os.path.join(a.data, "tables")):
        die(f"no tables/ directory in {a.data}")
    return a


def glob(a, table):
    return os.path.join(a.data, "tables", table, "*.parquet")


# ---------------------------------------------------------------- DuckDB
def duckdb_sql(a):
    src = lambda t: "read_parquet('%s')" % glob(a, t).replace("'", "''")  # noqa: E731
    m, u = src("messages"), src("users")
    G, K, lo, hi = a.groups, a.rows_per_group, a.length_lo, a.length_hi
    if a.question == "cohort_mean":
        if a.variant == "plain":
            return (f"SELECT u.age_group, AVG(m.length) AS mean_length FROM {m} m "
                    f"JOIN {u} u USING (user_id) GROUP BY u.age_group")
        return (f"WITH per AS (SELECT m.user_id, u.age_group, COUNT(*) AS c, "
                f"SUM(LEAST(GREATEST(m.length, {lo}), {hi})) AS s "
                f"FROM {m} m JOIN {u} u USING (user_id) GROUP BY m.user_id, u.age_group) "
                f"SELECT age_group, SUM(s * LEAST(c, {K}) / c) / SUM(LEAST(c, {K})) AS mean_length "
                f"FROM per GROUP BY age_group")
    key, where = (("emoji", "WHERE emoji IS NOT NULL") if a.question == "emoji"
                  else ("hour(ts)", ""))
    if a.variant == "plain":
        return f"SELECT {key} AS k, COUNT(*) AS n FROM {m} {where} GROUP BY k"
    return (f"WITH per AS (SELECT user_id, {key} AS k, COUNT(*) AS c FROM {m} {where} "
            f"GROUP BY user_id, k), "
            f"kept AS (SELECT k, c FROM per QUALIFY ROW_NUMBER() OVER "
            f"(PARTITION BY user_id ORDER BY hash(user_id, k, {HASH_SEED})) <= {G}) "
            f"SELECT k, SUM(LEAST(c, {K})) AS n FROM kept GROUP BY k")


def run_duckdb(a):
    try:
        import duckdb
    except ImportError as e:
        die(f"duckdb is not installed: {e}")
    con = duckdb.connect()
    if a.threads:
        con.execute(f"SET threads={int(a.threads)}")
    con.execute("SET TimeZone='UTC'")  # hour(ts) of a TIMESTAMPTZ follows the session zone
    sql = duckdb_sql(a)
    t0 = time.perf_counter()
    rows = con.execute(sql).fetchall()
    secs = time.perf_counter() - t0
    if os.environ.get("PEERS_DEBUG"):
        print(sorted(rows, key=lambda r: str(r[0])), file=sys.stderr)
    return {"seconds": secs, "rows": len(rows)}


# ---------------------------------------------------------------- OpenDP
OPENDP_NOTE = {  # how each OpenDP mode differs from dpq (see the docstring)
    "declared": "dpq's bounding done in polars (polars' keyed hash, not DuckDB's), bounds "
                "declared to OpenDP via unit_of(contributions=[Bound]), OpenDP adds the noise",
    "count": "OpenDP truncation keeps each person's G-1 lowest keys (keep='first'; 1-based "
             "dense rank; noise for G), not G keys by dpq's keyed hash",
    "cohort_mean": "OpenDP truncate_per_group keeps K random rows per person "
                   "(dpq scales s*kept/c: equal in expectation); dp.mean",
}


def run_opendp(a):
    if a.variant != "bounded":
        die("opendp has no plain (non-private) variant")
    try:
        import polars as pl
        import opendp.prelude as dp
    except ImportError as e:
        die(f"opendp/polars are not installed: {e}")
    dp.enable_features("contrib")
    mode = os.environ.get("PEERS_OPENDP_TRUNCATION", "declared")
    if mode not in ("declared", "native"):
        die("PEERS_OPENDP_TRUNCATION must be declared or native")
    G, K, lo, hi = a.groups, a.rows_per_group, a.length_lo, a.length_hi

    # Public information, read before the timer: the key sets, and the number
    # of people (the population size) as the Margin max_length of per-person data.
    if a.question == "emoji":
        cat = os.path.join(a.data, "tables", "emoji_catalog")
        src = glob(a, "emoji_catalog") if os.path.isdir(cat) else glob(a, "messages")
        keys = pl.read_parquet(src, columns=["emoji"]).drop_nulls().unique().sort("emoji")
    elif a.question == "hour":
        keys = pl.DataFrame({"hour": list(range(24))}, schema={"hour": pl.Int32})
    else:
        keys = pl.DataFrame({"age_group": AGE_GROUPS})
    n_people = pl.read_parquet(glob(a, "users"), columns=["user_id"]).height
    key = "age_group" if a.question == "cohort_mean" else a.question

    def context(lf, unit, max_length=None):
        return dp.Context.compositor(
            data=lf, privacy_unit=unit, privacy_loss=dp.loss_of(epsilon=a.epsilon),
            split_evenly_over=1,
            margins=[dp.polars.Margin(by=[key], max_length=max_length)] if max_length else None)

    by_id = dp.unit_of(contributions=1, identifier="user_id")
    t0 = time.perf_counter()
    # OpenDP's core cannot deserialize a Parquet scan, so the files are read eagerly.
    if a.question == "cohort_mean":
        m = pl.read_parquet(glob(a, "messages"), columns=["user_id", "length"]).lazy()
        u = pl.read_parquet(glob(a, "users"), columns=["user_id", "age_group"]).lazy()
        lf = m.join(u, on="user_id", how="inner")
    else:
        col = "emoji" if a.question == "emoji" else "ts"
        lf = pl.read_parquet(glob(a, "messages"), columns=["user_id", col]).lazy()
        lf = (lf.filter(pl.col("emoji").is_not_null()) if a.question == "emoji"
              else lf.with_columns(hour=pl.col("ts").dt.hour().cast(pl.Int32)))  # UTC; no i8 in OpenDP
    # declared: bound in polars as dpq does, materialize the per-person rows (so only
    # they cross into OpenDP) and declare the bounds, which hold by construction.
    if mode == "declared" and a.question == "cohort_mean":
        per = (lf.group_by("user_id", key)
               .agg(n=pl.len(), s=pl.col("length").clip(lo, hi).sum())
               .with_columns(kept=pl.min_horizontal("n", K).cast(pl.Int64))
               .select(key, "kept", sum_kept=pl.col("s") * pl.col("kept") / pl.col("n")))
        unit = dp.unit_of(contributions=[dp.polars.Bound(by=[key], per_group=1, num_groups=1)])
        q = context(per.collect().lazy(), unit, n_people).query().group_by(key).agg(
            pl.col("sum_kept").dp.sum((float(min(0, K * lo)), float(max(0, K * hi)))),
            pl.col("kept").dp.sum((0, K)))
    elif mode == "declared":
        per = (lf.group_by("user_id", key).agg(c=pl.len())
               .filter(pl.struct("user_id", key).hash(HASH_SEED)
                       .rank("ordinal").over("user_id") <= G)
               .select(key, c=pl.min_horizontal("c", K).cast(pl.Int64)))
        unit = dp.unit_of(contributions=[dp.polars.Bound(by=[key], per_group=1, num_groups=G)])
        q = context(per.collect().lazy(), unit, n_people).query().group_by(key).agg(
            pl.col("c").dp.sum((0, K)))
    elif a.question == "cohort_mean":  # native: OpenDP's own, verified truncation
        q = (context(lf, by_id, 10**9).query().truncate_per_group(K)
             .group_by(key).agg(pl.col("length").dp.mean((lo, hi))))
    else:
        q = (context(lf, by_id).query()
             .truncate_per_group(K, by=[key])
             .truncate_num_groups(G, by=[key], keep="first")
             .group_by(key).agg(dp.len()))
    q = q.with_keys(keys)
    df = q.release().collect()
    if mode == "declared" and a.question == "cohort_mean":
        df = df.with_columns(mean_length=pl.col("sum_kept") / pl.col("kept"))
    secs = time.perf_counter() - t0
    if os.environ.get("PEERS_DEBUG"):
        print(q.summarize().rows(), df.sort(key).rows(), file=sys.stderr)
    note = mode if mode == "declared" else ("count" if key != "age_group" else a.question)
    return {"seconds": secs, "rows": df.height, "note": OPENDP_NOTE[note]}


def main():
    a = parse_args()
    out = run_duckdb(a) if a.system == "duckdb" else run_opendp(a)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
