"""A load test of `dpq serve` with real clients: N concurrent psycopg sessions
running a mix of queries, then a check that the ledger holds exactly the
charges the clients were told about, and latency percentiles.

usage: load.py --dpq BIN [--clients 50] [--queries 20] [--users 2000] [--days 30]
               [--json OUT] [--keep DIR]

It builds a dataset (dpq init, generate, ingest), adds five analysts (three with
a quota of 4, two with 0.3, against a dataset budget of 10, so both the quotas
and the dataset budget run out while the clients race), starts `dpq serve` on a
free port, and runs the clients: client i logs in as analyst i mod 5 and runs
`--queries` statements drawn from the mix below (a seeded RNG per client).

The mix (weights): a fresh DP count (a distinct WHERE per statement, so each is
charged) 30; a per-group DP count, Laplace 15; a Gaussian mean (zCDP) 10; a
prepared statement with a bound parameter (extended protocol) 15; a repeated
query (a replay: nothing charged) 10; a refused query 5; SHOW dpq.budget 5; a
catalog query 5; dpq_explain 5.

Checks (exit 1 on any failure):
- every error carries an expected SQLSTATE (42501 refused, 53400 budget or
  quota exhausted); no connection is lost; no internal error;
- the ledger's query entries are exactly the charges announced to clients
  (same entry ids, analysts and ε, δ): nothing charged without an answer,
  nothing answered without a charge;
- no analyst spent more than its quota; the dataset no more than its budget;
- `dpq budget --verify` passes.
Prints latency p50/p90/p99 per kind of statement (milliseconds, wall clock
at the client, including the network round trips) and the throughput.
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal

import psycopg

ANALYSTS = [("a0", "4"), ("a1", "4"), ("a2", "4"), ("a3", "0.3"), ("a4", "0.3")]
PASSWORD = "load-test-password-{}"
SPENT = re.compile(r"spent ε=([0-9.eE+-]+), δ=([0-9.eE+-]+) \(ledger entry (\d+), analyst ([^)]+)\)")


def run(dpq, data, *args, stdin=None):
    r = subprocess.run([dpq, "--data", data, *args], input=stdin, capture_output=True, text=True, env={**os.environ, "DPQ_NO_PROGRESS": "1"})
    if r.returncode != 0:
        sys.exit(f"dpq {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def build_dataset(dpq, root, users, days):
    data = os.path.join(root, "data")
    logs = os.path.join(root, "logs")
    run(dpq, ".", "init", data)
    run(dpq, ".", "generate", "--users", str(users), "--days", str(days), "--out", logs, "--seed", "7")
    for t in ["emoji_catalog", "users", "messages", "calls", "payments"]:
        run(dpq, data, "ingest", t, os.path.join(logs, f"{t}.csv"))
    for name, quota in ANALYSTS:
        run(dpq, data, "analyst", "add", name, "--quota-epsilon", quota, "--quota-delta", "1e-7", stdin=PASSWORD.format(name) + "\n")
    return data


def start_server(dpq, data):
    p = subprocess.Popen([dpq, "--data", data, "serve", "--listen", "127.0.0.1:0", "--max-connections", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = p.stderr.readline()
    m = re.search(r"listening on \S+:(\d+)", first)
    if not m:
        p.kill()
        sys.exit(f"dpq serve did not start: {first}{p.stderr.read()}")
    # drain the log so the server never blocks on a full pipe
    log = []
    threading.Thread(target=lambda: log.extend(p.stderr), daemon=True).start()
    return p, int(m.group(1)), log


MIX = [("fresh count", 30), ("group count", 15), ("gaussian mean", 10), ("prepared", 15), ("replay", 10), ("refused", 5), ("show budget", 5), ("catalog", 5), ("explain", 5)]


def client(i, port, n, out):
    name = ANALYSTS[i % len(ANALYSTS)][0]
    rng = random.Random(1000 + i)
    rec = {"analyst": name, "timings": [], "charges": [], "errors": [], "lost": None}
    notices = []
    try:
        t0 = time.perf_counter()
        conn = psycopg.connect(f"host=127.0.0.1 port={port} dbname=dpq user={name} password={PASSWORD.format(name)}", autocommit=True)
        rec["timings"].append(("connect", time.perf_counter() - t0))
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        cur = conn.cursor()
        cur.execute("SET dpq.epsilon = 0.02")
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        for q in range(n):
            kind = rng.choices(kinds, weights)[0]
            notices.clear()
            t0 = time.perf_counter()
            try:
                if kind == "fresh count":
                    cur.execute(f"SELECT COUNT(*) AS n FROM messages WHERE length > {rng.randrange(0, 10**6)} OR length = -{i}")
                elif kind == "group count":
                    cur.execute(f"SELECT chat_kind, COUNT(*) AS n FROM messages WHERE length <> -{100 + i * 1000 + q} GROUP BY chat_kind")
                elif kind == "gaussian mean":
                    cur.execute("SET dpq.mechanism = gaussian")
                    cur.execute("SET dpq.delta = 1e-9")
                    try:
                        cur.execute(f"SELECT AVG(length) AS mean_length FROM messages WHERE length <> -{100 + i * 1000 + q}")
                        rows = cur.fetchall()
                    finally:
                        if not conn.closed:
                            cur.execute("SET dpq.mechanism = DEFAULT")
                            cur.execute("SET dpq.delta = DEFAULT")
                elif kind == "prepared":
                    cur.execute("SELECT COUNT(*) AS n FROM messages WHERE length > %s", (rng.randrange(10**6, 10**9),), prepare=True)
                elif kind == "replay":
                    cur.execute("SELECT COUNT(*) AS n FROM messages")
                elif kind == "refused":
                    cur.execute("SELECT user_id FROM messages")
                elif kind == "show budget":
                    cur.execute("SHOW dpq.budget")
                elif kind == "catalog":
                    cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
                elif kind == "explain":
                    cur.execute("SELECT * FROM dpq_explain('SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind')")
                if kind != "gaussian mean":
                    rows = cur.fetchall()
                dt = time.perf_counter() - t0
                rec["timings"].append((kind, dt))
                if kind == "refused":
                    rec["errors"].append((kind, "answered a query that must be refused"))
                for line in notices:
                    m = SPENT.search(line)
                    if m:
                        rec["charges"].append({"entry": int(m.group(3)), "analyst": m.group(4), "epsilon": m.group(1), "delta": m.group(2), "kind": kind, "rows": len(rows)})
            except psycopg.errors.Error as e:
                dt = time.perf_counter() - t0
                code = getattr(e, "sqlstate", None)
                rec["timings"].append((kind + " (error)", dt))
                expected = {"refused": {"42501"}}.get(kind, set()) | {"53400"}
                if code not in expected:
                    rec["errors"].append((kind, f"{code}: {e}"))
                if conn.closed:
                    raise
        conn.close()
    except Exception as e:  # a lost connection or a client-side failure
        rec["lost"] = repr(e)
    out[i] = rec


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dpq", required=True)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--json")
    ap.add_argument("--keep")
    a = ap.parse_args()
    root = a.keep or tempfile.mkdtemp(prefix="dpq-load-")
    os.makedirs(root, exist_ok=True)
    t_build = time.perf_counter()
    data = build_dataset(a.dpq, root, a.users, a.days)
    t_build = time.perf_counter() - t_build
    server, port, log = start_server(a.dpq, data)
    out = [None] * a.clients
    try:
        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i, port, a.queries, out)) for i in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=60)

    failures = []
    for i, rec in enumerate(out):
        if rec is None or rec["lost"]:
            failures.append(f"client {i}: connection lost: {rec and rec['lost']}")
            continue
        for kind, why in rec["errors"]:
            failures.append(f"client {i} ({rec['analyst']}), {kind}: {why}")

    # the ledger holds exactly the announced charges
    announced = {c["entry"]: c for rec in out if rec for c in rec["charges"]}
    log_json = json.loads(run(a.dpq, data, "budget", "--log", "--limit", "1000000", "--format", "json"))
    entries = [e for e in log_json["entries"] if e.get("kind") in ("query", "report")]
    ledger = {int(e["id"]): e for e in entries}
    if set(ledger) != set(announced):
        failures.append(f"ledger entries {sorted(set(ledger) - set(announced))[:10]} were never announced; announced {sorted(set(announced) - set(ledger))[:10]} are not in the ledger")
    for eid, c in announced.items():
        e = ledger.get(eid)
        if e and (e["analyst"] != c["analyst"] or Decimal(e["epsilon"]) != Decimal(c["epsilon"]) or Decimal(e["delta"]) != Decimal(c["delta"])):
            failures.append(f"entry {eid}: ledger says {e['analyst']} ε={e['epsilon']} δ={e['delta']}, the client was told {c}")
    by = json.loads(run(a.dpq, data, "budget", "--by-analyst", "--format", "json"))
    quotas = dict(ANALYSTS)
    spent_by = {}
    for row in by["analysts"]:
        spent_by[row["analyst"]] = Decimal(str(row["epsilon"]))
        mine = sum((Decimal(c["epsilon"]) for c in announced.values() if c["analyst"] == row["analyst"]), Decimal(0))
        if mine != Decimal(str(row["epsilon"])):
            failures.append(f"{row['analyst']}: ledger ε {row['epsilon']} ≠ sum of announced charges {mine}")
        if Decimal(str(row["epsilon"])) > Decimal(quotas[row["analyst"]]):
            failures.append(f"{row['analyst']} overspent: {row['epsilon']} > quota {quotas[row['analyst']]}")
    status = json.loads(run(a.dpq, data, "budget", "--format", "json"))
    total = Decimal(status["basic_epsilon_exact"])
    if total > Decimal(str(status["total_epsilon"])):
        failures.append(f"dataset overspent: {total} > {status['total_epsilon']}")
    verify = subprocess.run([a.dpq, "--data", data, "budget", "--verify"], capture_output=True, text=True)
    if verify.returncode != 0:
        failures.append(f"budget --verify failed: {verify.stdout}{verify.stderr}")

    timings = {}
    for rec in out:
        if rec:
            for kind, dt in rec["timings"]:
                timings.setdefault(kind, []).append(dt * 1000)
    everything = [x for k, v in timings.items() if k != "connect" for x in v]
    summary = {
        "clients": a.clients,
        "statements": len(everything),
        "wall_seconds": round(wall, 2),
        "statements_per_second": round(len(everything) / wall, 1),
        "charges": len(announced),
        "spent_epsilon_by_analyst": {k: str(v) for k, v in sorted(spent_by.items())},
        "dataset_spent_epsilon": str(total),
        "dataset_build_seconds": round(t_build, 1),
        "latency_ms": {k: {"n": len(v), "p50": round(pct(v, 50), 1), "p90": round(pct(v, 90), 1), "p99": round(pct(v, 99), 1)} for k, v in sorted(timings.items())},
        "all_statements_ms": {"p50": round(pct(everything, 50), 1), "p90": round(pct(everything, 90), 1), "p99": round(pct(everything, 99), 1)},
        "failures": failures,
    }
    print(f"{a.clients} clients, {len(everything)} statements in {wall:.1f} s ({summary['statements_per_second']}/s); {len(announced)} charges")
    print(f"{'statement':<22} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for k, v in summary["latency_ms"].items():
        print(f"{k:<22} {v['n']:>5} {v['p50']:>8} {v['p90']:>8} {v['p99']:>8}")
    s = summary["all_statements_ms"]
    print(f"{'all statements':<22} {len(everything):>5} {s['p50']:>8} {s['p90']:>8} {s['p99']:>8}")
    print("spent by analyst:", summary["spent_epsilon_by_analyst"], "dataset:", summary["dataset_spent_epsilon"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2)
    if failures:
        print("FAILED:", *failures[:30], sep="\n  ")
        if log:
            print("server log (last lines):", *log[-20:], sep="\n  ")
        sys.exit(1)
    print("ok: the ledger holds exactly the announced charges; no quota or budget exceeded; the ledger verifies")


if __name__ == "__main__":
    main()
