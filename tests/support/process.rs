//! The real binary as a child process: `netsentinel serve` on a port the OS picks, read back
//! from its JSON log line `netsentinel listening`, with everything it logs kept for assertions.
//! Used by the crash tests (`tests/suite/crash_restart.rs`) and the replicas of [`super::postgres`].

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// How long a child may take to report its address.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The binary with no `NETSENTINEL_*` variable inherited: the tests choose every setting, and a
/// developer's environment must not change them.
pub fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netsentinel"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("NETSENTINEL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A running `netsentinel serve` and what it has logged so far; killed when dropped.
pub struct Process {
    pub child: Child,
    pub base_url: String,
    /// Every stdout line (JSON log events), in order.
    pub log: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Process {
    /// Runs `cmd`, a `serve` command that must include `--addr 127.0.0.1:0 --log-format json`,
    /// and waits until it reports its address; `what` names it if it never does.
    pub fn spawn(mut cmd: Command, what: &str) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if event["message"] == "netsentinel listening" {
                        if let Some(addr) = event["addr"].as_str() {
                            let _ = addr_tx.send(addr.to_string());
                        }
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let err_text = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = err_pipe.read_to_string(&mut buf);
            err_text.lock().unwrap().push_str(&buf);
        });
        let Ok(addr) = addr_rx.recv_timeout(START_DEADLINE) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not report its address; log: {:?}; stderr: {}",
                log.lock().unwrap(),
                stderr.lock().unwrap()
            );
        };
        Process {
            child,
            base_url: format!("http://{addr}"),
            log,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// SIGKILL: no handler runs, nothing is flushed or handed back, as in a crash.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed child is reaped");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
