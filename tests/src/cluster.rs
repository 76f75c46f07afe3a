//! A throwaway PostgreSQL cluster a test starts, stops and restarts itself.
//!
//! Rule: the cluster lives in its own temporary directory, listens on a free
//! port of 127.0.0.1 (and a socket in that directory), and is stopped with
//! `pg_ctl stop -m immediate` and removed on drop, even when the test fails.
//! The server binaries are those of `PICLOUD_TEST_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin`, else the `PATH`. PostgreSQL refuses to run
//! as root, so when the tests run as root every server command runs as the
//! `postgres` OS user through `runuser -u postgres --`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL cluster of one test.
pub struct Cluster {
    /// The port it listens on.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn server_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PICLOUD_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_default()
}

fn is_root() -> bool {
    // The effective uid, without a libc dependency.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
        .port()
}

impl Cluster {
    /// initdb a new cluster in a new temporary directory and start it.
    pub fn start() -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("picloud-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creating the cluster directory");
        // The postgres user creates the data directory inside this one.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("opening the cluster directory to the postgres user");
        let cluster = Cluster {
            port: free_port(),
            dir,
            bin: server_bin_dir(),
        };
        cluster.server_cmd(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The URL of database `db` on this cluster, as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn server_cmd(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let exe = if exe.exists() {
            exe
        } else {
            PathBuf::from(tool)
        };
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", &data];
        all.extend_from_slice(args);
        self.server_cmd("pg_ctl", &all);
    }

    /// Start the server and wait until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.pg_ctl(&["-l", &log, "-o", &options, "-w", "-t", "60", "start"]);
    }

    /// Stop the server at once, as a crash would (`-m immediate`).
    pub fn stop_immediate(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    /// The directory the cluster lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let data = data.display().to_string();
            let exe = self.bin.join("pg_ctl");
            let mut cmd = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&exe);
                c
            } else {
                Command::new(&exe)
            };
            let _ = cmd
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
