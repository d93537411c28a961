//! `dpq serve` with real clients: psql (Debian's postgresql-client) and
//! psycopg 3 (tests/gateway/clients.py). `.ci/run` installs both; a machine
//! without them fails here with the command that installs them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::{dataset, dpq, json, ok};

const ALICE: &str = "alice-password-1";
const BOB: &str = "bob-password-22";
const CAROL: &str = "carol-password-333";

/// A running `dpq serve`, stopped (SIGTERM, graceful) when dropped.
struct Server {
    child: Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn add_analyst(data: &Path, name: &str, password: &str, quota: Option<&str>) {
    let mut c = dpq();
    c.arg("--data").arg(data).args(["analyst", "add", name]);
    if let Some(q) = quota {
        c.args(["--quota-epsilon", q]);
    }
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "analyst add {name}: {}", String::from_utf8_lossy(&out.stderr));
}

fn serve(data: &Path, extra: &[&str]) -> Server {
    let mut child =
        dpq().arg("--data").arg(data).args(["serve", "--listen", "127.0.0.1:0"]).args(extra).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("dpq serve prints where it listens").unwrap();
    let port: u16 = first
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            l.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    Server { child, port, log }
}

fn psql_bin() -> &'static str {
    let found = Command::new("psql").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "psql is missing: install Debian's postgresql-client (`sudo apt-get install postgresql-client`; .ci/run does)");
    "psql"
}

struct Psql {
    code: i32,
    stdout: String,
    stderr: String,
}

fn psql(port: u16, user: &str, password: &str, extra_conn: &str, args: &[&str]) -> Psql {
    let conn = format!("host=127.0.0.1 port={port} user={user} dbname=dpq connect_timeout=10 {extra_conn}");
    let out = Command::new(psql_bin())
        .arg(conn)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .args(args)
        .env("PGPASSWORD", password)
        .env_remove("PGSERVICE")
        .output()
        .unwrap();
    Psql {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn gateway_dataset() -> (tempfile::TempDir, PathBuf) {
    let (d, data) = dataset();
    add_analyst(&data, "alice", ALICE, Some("5"));
    add_analyst(&data, "bob", BOB, Some("0.3"));
    add_analyst(&data, "carol", CAROL, Some("0.5"));
    (d, data)
}

#[test]
fn psql_authenticates_queries_and_is_refused_with_sqlstates() {
    let (_d, data) = gateway_dataset();
    let s = serve(&data, &[]);

    // a DP query: the value, its interval columns, and the privacy metadata as NOTICEs
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SET dpq.epsilon = 0.25", "-c", "SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("n_stddev") && r.stdout.contains("n_ci_low") && r.stdout.contains("n_ci_high"), "{}", r.stdout);
    assert!(r.stderr.contains("NOTICE") && r.stderr.contains("spent ε=0.25"), "the charge is announced: {}", r.stderr);
    // the charge is recorded under the analyst's name
    let log = json(&data, &["budget", "--log", "--format", "json"]);
    let entries = log["entries"].as_array().or_else(|| log.as_array()).cloned().unwrap_or_default();
    assert!(entries.iter().any(|e| e["analyst"] == "alice" && e["epsilon"] == "0.25"), "{log}");

    // wrong password and unknown analyst: the same refusal
    let wrong = psql(s.port, "alice", "not-the-password", "", &["-c", "SELECT 1"]);
    let unknown = psql(s.port, "mallory", "not-the-password", "", &["-c", "SELECT 1"]);
    assert_ne!(wrong.code, 0);
    assert_ne!(unknown.code, 0);
    assert!(wrong.stderr.contains("password authentication failed for user \"alice\""), "{}", wrong.stderr);
    assert_eq!(wrong.stderr.replace("alice", "X"), unknown.stderr.replace("mallory", "X"), "unknown and wrong look the same");

    // a refusal: 42501 with why and how
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SELECT user_id, length FROM messages"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("42501") && r.stderr.contains("refused"), "{}", r.stderr);
    assert!(r.stderr.contains("DETAIL") && r.stderr.contains("HINT"), "why and how: {}", r.stderr);
    // a syntax error: 42601 with its position
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SELECT COUNT(*) FORM messages"]);
    assert!(r.stderr.contains("42601"), "{}", r.stderr);
    // a bad setting: 22023; an unknown dpq setting: 42704
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SET dpq.epsilon = -1"]);
    assert!(r.stderr.contains("22023"), "{}", r.stderr);
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SET dpq.epsilom = 1"]);
    assert!(r.stderr.contains("42704") && r.stderr.contains("dpq.epsilon"), "{}", r.stderr);

    // explain and the budget through SQL (nothing spent)
    let before = json(&data, &["budget", "--format", "json"]);
    let r = psql(
        s.port,
        "alice",
        ALICE,
        "",
        &["-c", "SELECT * FROM dpq_explain('SELECT COUNT(*) FROM messages')", "-c", "EXPLAIN SELECT AVG(length) FROM messages", "-c", "SHOW dpq.budget"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("QUERY PLAN") && r.stdout.contains("epsilon_remaining") && r.stdout.contains("analyst_epsilon_quota"), "{}", r.stdout);
    assert_eq!(json(&data, &["budget", "--format", "json"])["epsilon_spent"], before["epsilon_spent"], "explain and SHOW spend nothing");
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SELECT COUNT(*) AS n FROM calls", "-c", "SHOW dpq.last_release"]);
    assert!(r.stdout.contains("ledger_entry") || r.stdout.contains("entry"), "{}", r.stdout);

    // schema discovery from the configuration: \dt and \d
    let r = psql(s.port, "alice", ALICE, "", &["-c", "\\dt"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for t in ["messages", "users", "calls", "emoji_catalog"] {
        assert!(r.stdout.contains(t), "\\dt lists {t}: {}", r.stdout);
    }
    let r = psql(s.port, "alice", ALICE, "", &["-c", "\\d messages"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for c in ["user_id", "ts", "length", "emoji", "chat_kind"] {
        assert!(r.stdout.contains(c), "\\d messages shows {c}: {}", r.stdout);
    }
    // a catalog query that reaches for private rows is analysed like any other
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SELECT c.relname, (SELECT COUNT(*) FROM messages) FROM pg_catalog.pg_class c"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
}

#[test]
fn quotas_hold_under_twenty_racing_clients_and_tls_works() {
    let (_d, data) = gateway_dataset();
    // a self-signed certificate
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl makes the test certificate (apt-get install openssl)");
    assert!(st.success());
    let s = serve(&data, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);

    // TLS on: libpq negotiates it (sslmode=require fails without)
    let r = psql(s.port, "alice", ALICE, "sslmode=require", &["-c", "\\conninfo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("SSL connection"), "{}", r.stdout);

    // 20 clients race carol's quota of ε=0.5 with fresh ε=0.1 queries: exactly 5 fit
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let port = s.port;
            std::thread::spawn(move || {
                psql(port, "carol", CAROL, "sslmode=require", &["-c", "SET dpq.epsilon = 0.1", "-c", &format!("SELECT COUNT(*) AS n{i} FROM messages")])
            })
        })
        .collect();
    let results: Vec<Psql> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let answered = results.iter().filter(|r| r.code == 0).count();
    let over = results.iter().filter(|r| r.stderr.contains("53400")).count();
    assert_eq!((answered, over), (5, 15), "{:?}", results.iter().map(|r| r.stderr.lines().last().unwrap_or("").to_string()).collect::<Vec<_>>());
    // the ledger's record agrees: carol spent exactly her quota
    let by = ok(&data, &["budget", "--by-analyst", "--format", "json"]);
    let by: serde_json::Value = serde_json::from_str(&by).unwrap();
    let carol = by["analysts"].as_array().and_then(|a| a.iter().find(|x| x["analyst"] == "carol")).cloned().unwrap_or_default();
    assert_eq!((carol["epsilon"].as_str(), carol["charges"].as_u64()), (Some("0.5"), Some(5)), "carol's spend: {by}");

    // bob's quota (0.3) runs out while alice goes on
    let r = psql(s.port, "bob", BOB, "sslmode=require", &["-c", "SET dpq.epsilon = 0.2", "-c", "SELECT COUNT(*) AS a FROM calls"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = psql(s.port, "bob", BOB, "sslmode=require", &["-c", "SET dpq.epsilon = 0.2", "-c", "SELECT COUNT(*) AS b FROM calls"]);
    assert!(r.stderr.contains("53400") && r.stderr.contains("quota"), "{}", r.stderr);
    let r = psql(s.port, "alice", ALICE, "sslmode=require", &["-c", "SET dpq.epsilon = 0.2", "-c", "SELECT COUNT(*) AS c FROM calls"]);
    assert_eq!(r.code, 0, "alice continues: {}", r.stderr);
    // the server logged the logins and the charges
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains("carol: logged in (TLS)") && log.contains("answered (ledger entry"), "{log}");
}

/// psycopg 3 (extended protocol, prepared statements, notices, SQLSTATE
/// classes) and pandas through SQLAlchemy: tests/gateway/clients.py.
#[test]
fn psycopg_and_pandas_clients() {
    let python = python();
    let (_d, data) = gateway_dataset();
    let s = serve(&data, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/clients.py");
    let out = Command::new(&python).arg(script).args([&s.port.to_string(), "alice", ALICE, "bob", BOB]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "clients.py failed:\n{stdout}\n{stderr}\nserver log:\n{}", s.log.lock().unwrap());
    assert!(stdout.contains("all client checks passed"), "{stdout}");
}

fn python() -> String {
    let python = std::env::var("DPQ_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import psycopg, sqlalchemy, pandas"]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "{python} lacks psycopg, sqlalchemy or pandas: `pip install 'psycopg[binary]' sqlalchemy pandas` in a venv and set DPQ_TEST_PYTHON to its python (.ci/run does)"
    );
    python
}

/// Fifty concurrent psycopg sessions of five analysts running mixed
/// statements (charged counts, Gaussian means, prepared statements, replays,
/// refusals, SHOW, catalog, explain) while the quotas and the dataset budget
/// run out: the ledger holds exactly the charges announced to the clients,
/// no quota or budget is exceeded, every error has its SQLSTATE, the ledger
/// verifies (tests/gateway/load.py; its `--queries 20` run on a release build
/// gives the latency figures of docs/gateway.md).
#[test]
fn fifty_concurrent_clients_spend_exactly_what_they_are_told() {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/load.py");
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(script)
        .args(["--dpq", env!("CARGO_BIN_EXE_dpq"), "--clients", "50", "--queries", "3", "--users", "150", "--days", "30", "--keep"])
        .arg(root.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "load.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok: the ledger holds exactly the announced charges"), "{stdout}");
}

/// Plain TCP only on loopback: a network address needs TLS or an explicit
/// --allow-plaintext.
#[test]
fn serve_refuses_plaintext_on_the_network() {
    let (_d, data) = crate::util::dataset();
    let r = crate::util::run(&data, &["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--tls-cert") && r.stderr.contains("--allow-plaintext"), "{}", r.stderr);
}
