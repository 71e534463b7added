//! PostgreSQL for the tests: a fresh database per test, and replicas of the real binary sharing it.
//!
//! The tests need `NETSENTINEL_TEST_DATABASE_URL` (a role that may `CREATE DATABASE`);
//! `eval "$(bash scripts/test-postgres.sh)"` starts a private server and sets it. Without it a
//! test skips with a loud message, unless `CI` is set: then it fails, so CI cannot pass
//! without running them. Each test creates its own database (random name) and drops it at
//! the end, so tests are isolated and run in parallel.

use std::io::Write;
use std::path::Path;

use super::in_ci;
use super::process::{Process, binary};

pub const URL_VAR: &str = "NETSENTINEL_TEST_DATABASE_URL";
/// A `pg_ctl` for the test server (scripts/test-postgres.sh writes one), for the restart test.
pub const PG_CTL_VAR: &str = "NETSENTINEL_TEST_PG_CTL";

/// The value of `var`, or `None` after a loud skip message (a panic under CI).
pub fn required_env(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            assert!(
                !in_ci(),
                "{test}: CI is set but {var} is not; .ci/run starts PostgreSQL with \
                 scripts/test-postgres.sh and exports it. The PostgreSQL tests must run in CI."
            );
            // Straight to stderr, past libtest's capture, so the skip shows in a normal run.
            let _ = writeln!(
                std::io::stderr(),
                "\n==================== SKIPPED: {test} ====================\n\
                 {var} is not set, so this PostgreSQL test did NOT run.\n\
                 Start a throwaway server with: eval \"$(bash scripts/test-postgres.sh)\"\n\
                 (with CI set, a missing {var} fails instead of skipping)\n\
                 ===========================================================\n"
            );
            None
        }
    }
}

/// Runs blocking PostgreSQL client code on a plain thread: the sync client refuses to run on
/// a thread that drives an async runtime.
pub fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .expect("the PostgreSQL helper thread")
}

/// A database of its own for one test, dropped (with any connections left) at the end.
pub struct TestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// `None` (after the skip message) when no test server is configured outside CI.
    pub fn create(test: &str) -> Option<TestDb> {
        let admin_url = required_env(URL_VAR, test)?;
        let name = format!("ns_test_{}", uuid::Uuid::new_v4().simple());
        let (admin, db) = (admin_url.clone(), name.clone());
        off_runtime(move || {
            let mut client = ::postgres::Client::connect(&admin, ::postgres::NoTls)
                .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .expect("CREATE DATABASE (the role needs CREATEDB)");
        });
        Some(TestDb {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, db) = (self.admin_url.clone(), self.name.clone());
        // Best effort: a failed test must still report its own failure, not this one.
        let _ = std::thread::spawn(move || {
            if let Ok(mut client) = ::postgres::Client::connect(&admin, ::postgres::NoTls) {
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let (head, tail) = url.split_at(scheme_end);
    let (authority, rest) = match tail.find('/') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    let query = rest.find('?').map_or("", |i| &rest[i..]);
    format!("{head}{authority}/{name}{query}")
}

/// A `netsentinel serve` child process on a port the OS picks, sharing the database.
pub struct Replica {
    pub name: String,
    process: Process,
}

impl std::ops::Deref for Replica {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl Replica {
    /// Starts a replica on `database_url` with a data directory of its own and `extra` flags,
    /// and waits until it listens.
    pub fn start(name: &str, database_url: &str, data_dir: &Path, extra: &[String]) -> Replica {
        let mut cmd = binary();
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("NETSENTINEL_DATABASE_URL", database_url)
            .args(["--database-timeout-ms", "2000", "--log", "info"])
            .args(extra);
        Replica {
            name: name.to_owned(),
            process: Process::spawn(cmd, &format!("replica {name}")),
        }
    }

    /// SIGKILL: nothing is flushed or handed back, as in a crash.
    pub fn kill_9(self) {
        self.process.kill_9();
    }

    /// Log lines whose message contains `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }
}

/// A store on `url` as the store tests open it: two pooled connections, migrated.
pub fn connect(url: &str) -> netsentinel::store::postgres::PgStore {
    use netsentinel::store::postgres::{PgOptions, PgStore};
    PgStore::connect(&PgOptions {
        url: url.to_owned(),
        pool_size: 2,
        timeout: std::time::Duration::from_secs(5),
        keep_models: 3,
    })
    .expect("the store connects and migrates")
}
