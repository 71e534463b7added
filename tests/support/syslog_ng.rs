//! Debian's syslog-ng as a real program under test: found on `PATH` or in /usr/sbin, run in the
//! foreground with everything in a temp dir, killed when dropped. Used as a pipeline that ships
//! logs to netsentinel (`pipeline_syslog_ng`) and as the collector netsentinel's syslog sinks
//! deliver to (`syslog_sink`).
//!
//! When syslog-ng (or a module a test needs) is missing, [`Binaries::find_or_skip`] prints a
//! loud SKIP and the test passes, unless `CI` is set (`.ci/run` installs `syslog-ng-core` and
//! `syslog-ng-mod-http`): then it fails.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::in_ci;

/// How long syslog-ng may take to start answering on its control socket.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// `syslog-ng` and `syslog-ng-ctl`.
pub struct Binaries {
    pub daemon: PathBuf,
    pub ctl: PathBuf,
}

impl Binaries {
    /// Both programs, with every module in `modules` (e.g. `http`); or, when missing, a loud
    /// skip message naming `test` and `None`, or a failure under CI.
    pub fn find_or_skip(test: &str, modules: &[&str]) -> Option<Binaries> {
        let dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        let found = dirs
            .into_iter()
            .chain([PathBuf::from("/usr/sbin")])
            .map(|d| Binaries {
                daemon: d.join("syslog-ng"),
                ctl: d.join("syslog-ng-ctl"),
            })
            .find(|b| b.daemon.is_file() && b.ctl.is_file() && b.has_modules(modules));
        if found.is_none() {
            assert!(
                !in_ci(),
                "CI is set but syslog-ng (with the modules {modules:?}) is not installed; .ci/run \
                 installs syslog-ng-core and syslog-ng-mod-http. {test} must run in CI."
            );
            // Straight to stderr, past libtest's capture, so the skip shows in a normal run.
            let _ = writeln!(
                std::io::stderr(),
                "\n==================== SKIPPED: {test} ====================\n\
                 syslog-ng (with the modules {modules:?}) is not installed, so this test\n\
                 did NOT run. Install it with:\n\
                 apt-get install -y --no-install-recommends syslog-ng-core syslog-ng-mod-http\n\
                 (with CI set, a missing syslog-ng fails instead of skipping)\n\
                 =====================================================================\n"
            );
        }
        found
    }

    fn has_modules(&self, modules: &[&str]) -> bool {
        if modules.is_empty() {
            return true;
        }
        Command::new(&self.daemon)
            .arg("--version")
            .output()
            .is_ok_and(|out| {
                let text = String::from_utf8_lossy(&out.stdout);
                let available: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("Available-Modules:"))
                    .flat_map(|m| m.split(','))
                    .map(str::trim)
                    .collect();
                modules.iter().all(|m| available.contains(m))
            })
    }
}

/// syslog-ng in the foreground with its files in a temp dir; killed when dropped.
pub struct SyslogNg {
    child: Child,
    ctl: PathBuf,
    control: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl SyslogNg {
    /// Runs the configuration `conf` (written to `dir`), with its persist file, pid file and
    /// control socket in `dir`, and waits until it answers on the control socket.
    pub fn start(bins: &Binaries, dir: &Path, conf: &str) -> SyslogNg {
        let conf_path = dir.join("syslog-ng.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let control = dir.join("syslog-ng.ctl");
        let mut child = Command::new(&bins.daemon)
            .args(["--foreground", "--stderr", "--no-caps"])
            .arg("--cfgfile")
            .arg(&conf_path)
            .arg("--persist-file")
            .arg(dir.join("syslog-ng.persist"))
            .arg("--pidfile")
            .arg(dir.join("syslog-ng.pid"))
            .arg("--control")
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("syslog-ng starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let text = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        let mut sng = SyslogNg {
            child,
            ctl: bins.ctl.clone(),
            control,
            stderr,
        };
        let deadline = Instant::now() + START_DEADLINE;
        while sng.stats_rows().is_none() {
            if let Ok(Some(status)) = sng.child.try_wait() {
                panic!("syslog-ng exited with {status}: {}", sng.log());
            }
            assert!(
                Instant::now() < deadline,
                "syslog-ng did not start: {}",
                sng.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sng
    }

    /// Everything syslog-ng wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `syslog-ng-ctl stats`: `SourceName;SourceId;SourceInstance;State;Type;Number` rows, or
    /// `None` while the control socket does not answer.
    pub fn stats_rows(&self) -> Option<String> {
        let out = Command::new(&self.ctl)
            .args(["stats", "--control"])
            .arg(&self.control)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
