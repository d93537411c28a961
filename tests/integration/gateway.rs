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

/// A startup packet for `user` (protocol 3.0).
fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", "dpq")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

/// Whether the server closes `s` within `secs` (reading what it sends meanwhile).
fn closed_within(s: &mut std::net::TcpStream, secs: u64) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return true,
        }
    }
    false
}

/// The gateway attack's findings, as regressions: unauthenticated clients
/// can neither send large messages nor hold connection slots; a pathological
/// statement does not stall other clients; a catalog cross join is stopped;
/// a client's user name cannot forge log lines; an analyst whose password
/// changes loses an open connection.
#[test]
fn hostile_clients_do_not_take_the_gateway() {
    let (_d, data) = gateway_dataset();
    let s = serve(&data, &["--max-connections", "3", "--statement-timeout", "3s"]);
    let addr = format!("127.0.0.1:{}", s.port);

    // a 1 GB query announced before authentication: the connection is closed at its header
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(&startup_packet("nosuchuser")).unwrap();
    let mut huge = vec![b'Q'];
    huge.extend_from_slice(&(1u32 << 30).to_be_bytes());
    huge.extend_from_slice(&[b'x'; 4096]);
    c.write_all(&huge).unwrap();
    assert!(closed_within(&mut c, 5), "an unauthenticated 1 GB message is refused at its header");

    // unauthenticated clients that never answer SCRAM take no connection slot
    let stalled: Vec<std::net::TcpStream> = (0..6)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(&startup_packet("alice")).unwrap();
            c
        })
        .collect();
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SELECT 1 AS one"]);
    assert_eq!(r.code, 0, "an analyst logs in past six stalled clients on a 3-slot gateway: {}", r.stderr);
    // and the stalled ones are dropped at the authentication deadline
    let mut first = stalled.into_iter().next().unwrap();
    assert!(closed_within(&mut first, 15), "a client that does not authenticate is dropped");

    // the fuzzer's pathological text: refused within the parse deadline, others go on
    let evil = "SELECT dat .a.LECTu .a .a.LECTu .CTA .a .a.LECTu .a [dtS .a.LECTu .at .a.LECTu .a .a.LECTu .CTA .a .a.LECTu .a [dtS .a.LECTu .a .a.L";
    let port = s.port;
    let attacker = std::thread::spawn(move || psql(port, "bob", BOB, "", &["-c", evil]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t = std::time::Instant::now();
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SELECT version()"]);
    eprintln!("another client during the pathological parse: {:?}", t.elapsed());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "another client waited {:?}", t.elapsed());
    let a = attacker.join().unwrap();
    assert_ne!(a.code, 0);
    assert!(a.stderr.contains("42601"), "{}", a.stderr);

    // a catalog cross join ends (row limit, memory pool or timeout), the server stays
    let t = std::time::Instant::now();
    let r = psql(
        s.port,
        "alice",
        ALICE,
        "",
        &["-c", "SELECT count(*) FROM pg_catalog.pg_class a, pg_catalog.pg_class b, pg_catalog.pg_class c, pg_catalog.pg_class d, pg_catalog.pg_class e"],
    );
    assert_ne!(r.code, 0, "{}", r.stdout);
    eprintln!("the cross join ended after {:?}: {}", t.elapsed(), r.stderr.lines().next().unwrap_or(""));
    let r = psql(s.port, "alice", ALICE, "", &["-c", "SELECT 1 AS still_here"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // a user name cannot forge a log line (a failed login logs the name)
    let forged = Command::new(psql_bin())
        .args(["-h", "127.0.0.1", "-p", &s.port.to_string(), "-d", "dpq", "-X", "-c", "SELECT 1"])
        .arg("-U")
        .arg("x\n2026-01-01T00:00:00Z 127.0.0.1:1 alice: logged in (TLS)")
        .env("PGPASSWORD", "wrong-password")
        .output()
        .unwrap();
    assert!(!forged.status.success());

    // a changed password ends what an open connection may do
    let cmd = format!(
        "\\! printf 'carol-new-password-4\\n' | {} --data {} analyst add carol --quota-epsilon 0.5 --replace >/dev/null",
        env!("CARGO_BIN_EXE_dpq"),
        data.display()
    );
    let r = psql(s.port, "carol", CAROL, "", &["-c", "SELECT 1 AS before", "-c", &cmd, "-c", "SELECT COUNT(*) AS n FROM calls"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("28000") && r.stderr.contains("password changed"), "{}", r.stderr);
    // a password changed while a login is half done: the login may finish, but
    // its first statement is refused (the verifier it used is no longer current);
    // --replace without a quota keeps the analyst's quota
    let gate = data.parent().unwrap().join("gate");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/scram_race.py");
    let mut racer = Command::new("python3")
        .arg(&script)
        .args([&s.port.to_string(), "bob", BOB, gate.to_str().unwrap(), "SELECT COUNT(*) AS n FROM calls"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(racer.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("server-first received"), "{first}");
    let mut child = dpq().arg("--data").arg(&data).args(["analyst", "add", "bob", "--replace"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "bob-new-password-99").unwrap();
    assert!(child.wait().unwrap().success());
    std::fs::write(&gate, "").unwrap();
    let out = racer.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("row"), "a statement ran on a login made with the old password: {text}");
    assert!(text.contains("28000") || text.contains("28P01"), "{text}");
    let toml = std::fs::read_to_string(data.join("analysts.toml")).unwrap();
    let bob = toml.split("[analysts.bob]").nth(1).unwrap_or("");
    assert!(bob.contains("epsilon = \"0.3\""), "bob keeps his quota:\n{toml}");

    let log = s.log.lock().unwrap().clone();
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")), "a forged line in the log:\n{log}");
    assert!(log.contains("\\n2026-01-01"), "the name is printed escaped:\n{log}");
}
