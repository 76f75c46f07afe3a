//! Real `picloud-host` processes for the reliability tests.
//!
//! Rule: a process started here writes its output to files in the test's
//! directory (never to a pipe nobody drains, which would stall it), is
//! stopped with SIGKILL or SIGINT by its own pid, and is killed on drop, so
//! a failing test leaves no dispatcher behind.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::db::host_bin;

/// A running `picloud-host` process.
pub struct HostProcess {
    child: Child,
    /// Its process id (part of its dispatcher's `locked_by`).
    pub pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
    exited: Option<ExitStatus>,
}

/// Start `picloud-host --database-url URL ARGS...` with `env`, its output in
/// `dir/<name>.out` and `dir/<name>.err`.
pub fn spawn_host(
    url: &str,
    args: &[&str],
    env: &[(&str, String)],
    dir: &Path,
    name: &str,
) -> HostProcess {
    let stdout = dir.join(format!("{name}.out"));
    let stderr = dir.join(format!("{name}.err"));
    let mut cmd = Command::new(host_bin());
    cmd.arg("--database-url")
        .arg(url)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("creating a log file"))
        .stderr(File::create(&stderr).expect("creating a log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("starting picloud-host");
    HostProcess {
        pid: child.id(),
        child,
        stdout,
        stderr,
        exited: None,
    }
}

/// A long-running dispatcher: `picloud-host dispatch`.
pub fn spawn_dispatcher(url: &str, env: &[(&str, String)], dir: &Path, name: &str) -> HostProcess {
    spawn_host(url, &["dispatch"], env, dir, name)
}

impl HostProcess {
    /// SIGKILL, then wait. Panics if the process had already exited by
    /// itself (a dispatcher must only stop when told).
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exited() {
            panic!(
                "picloud-host {} exited by itself ({status}) before it was killed:\n{}",
                self.pid,
                self.stderr()
            );
        }
        self.child.kill().expect("sending SIGKILL");
        let status = self.child.wait().expect("waiting for the killed process");
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
        self.exited = Some(status);
        status
    }

    /// SIGINT (what Ctrl-C sends), then wait up to `grace`; SIGKILL and
    /// panic if it does not stop by then.
    pub fn interrupt(&mut self, grace: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -INT {}", self.pid);
        self.wait_for_exit(grace, || "it was sent SIGINT".to_owned())
    }

    /// Wait up to `limit` for it to exit by itself; on time-out, kill it and
    /// panic with its stderr and `context` (what the test knows of why it
    /// might hang), so a stuck process fails the test instead of the run.
    pub fn wait_for_exit(
        &mut self,
        limit: Duration,
        context: impl FnOnce() -> String,
    ) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exited() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "picloud-host {} did not exit within {limit:?}; {}\nits stderr:\n{}",
                    self.pid,
                    context(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its exit status, if it has exited.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("polling a child");
        }
        self.exited
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Panic with its stderr unless it is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exited() {
            panic!(
                "picloud-host {} exited by itself ({status}):\n{}",
                self.pid,
                self.stderr()
            );
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if self.try_exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `picloud-host --database-url URL ARGS...` to completion, and how long
/// it took.
pub fn run_host(url: &str, args: &[&str], env: &[(&str, String)]) -> (Output, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new(host_bin());
    cmd.arg("--database-url")
        .arg(url)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running picloud-host");
    (out, started.elapsed())
}

/// A small deterministic random generator (xorshift64*), seeded so a failing
/// run can be repeated: tests print the seed and read it back from
/// `PICLOUD_RELIABILITY_SEED`.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `PICLOUD_RELIABILITY_SEED`, else from the clock.
    pub fn from_env() -> Self {
        let seed = std::env::var("PICLOUD_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        Rng::new(seed)
    }

    /// Seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The seed this generator started from is not kept; call before use.
    pub fn seed(&self) -> u64 {
        self.0
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform duration in [lo, hi).
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi - lo).mul_f64(self.unit())
    }
}

/// A whole number from the environment variable `var`, else `default`;
/// panics on a malformed value.
pub fn env_size(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}='{v}' is not a whole number")),
        Err(_) => default,
    }
}
