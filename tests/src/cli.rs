//! Driving the real `picloud-host` binary as a person would, and the row
//! counts that "changes nothing" is checked against.
//!
//! Rule: every run gets a clean environment for the variables the host
//! reads (no `PICLOUD_DATABASE_URL` from the caller, a test-only compile
//! cache), so a test says exactly what the process sees.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::db::{Pool, TestDb, host_bin};

/// One run of the binary.
pub struct Run {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// What it printed.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Run `picloud-host --database-url URL ARGS...` with extra `env`.
pub fn run_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    run_input(url, args, env, None)
}

/// [`run_with`], with `stdin` fed to the process.
pub fn run_input(url: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Run {
    let mut cmd = Command::new(host_bin());
    cmd.arg("--database-url").arg(url).args(args);
    // Keep compiled scripts out of the user's cache and make every run alike.
    cmd.env(
        "PICLOUD_CACHE_DIR",
        std::env::temp_dir().join("picloud-cli-test-cache"),
    );
    cmd.env_remove("PICLOUD_DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running picloud-host");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("a stdin pipe");
        let bytes = bytes.to_vec();
        // Write from a thread: the process may exit before reading it all.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("waiting for picloud-host");
    Run {
        ok: status.success(),
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Run `picloud-host --database-url URL ARGS...`.
pub fn run(url: &str, args: &[&str]) -> Run {
    run_with(url, args, &[])
}

/// Run and require success; its stdout.
pub fn ok(url: &str, args: &[&str]) -> String {
    let r = run(url, args);
    assert!(r.ok, "picloud-host {args:?} failed: {}", r.stderr);
    r.stdout
}

/// Require that `r` is a refusal: exit code 1 (not a panic's 101, not a
/// signal), exactly one line on stderr, `error: ` and then `want`.
pub fn assert_refused(r: &Run, what: &str, want: &str) {
    let line = r.stderr.trim();
    assert!(!r.ok, "{what} should fail, printed {:?}", r.stdout);
    assert_eq!(
        r.code,
        Some(1),
        "{what}: a clean refusal exits 1, got {:?}: {line}",
        r.code
    );
    assert!(
        line.starts_with("error: ") && line.contains(want),
        "{what}: got {line:?}, want {want:?}"
    );
    assert_eq!(line.lines().count(), 1, "{what}: one line, got {line:?}");
    assert!(!line.contains("panicked"), "{what}: {line}");
}

/// Row counts of every table of the schema: what "changes nothing" is
/// checked against.
pub async fn table_counts(db: &TestDb) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in crate::db::TABLES {
        let sql = format!("select count(*) from {t}");
        let n: i64 = match &db.pool {
            Pool::Sqlite(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
            Pool::Postgres(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
        };
        out.push((t.to_owned(), n));
    }
    out
}
