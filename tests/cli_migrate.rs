//! `picloud-host migrate`, run as the real binary: it applies the schema on
//! both backends (twice is harmless), and its errors are one line, name the
//! URL without its password and exit non-zero.

use std::process::{Command, Output};

use picloud_tests::db::{FreshPostgres, TABLES, TempDir, host_bin};

const INDEXES: [&str; 9] = [
    "idx_outbox_due",
    "idx_triggers_matching",
    "idx_dead_letters_app_unresolved",
    "idx_dead_letters_gc",
    "idx_abandoned_executions_gc",
    "idx_invocation_replies_stale",
    "idx_outbox_app_due",
    "idx_dead_letters_app_created",
    "idx_api_tokens_principal",
];

fn host(args: &[&str]) -> Output {
    Command::new(host_bin())
        .args(args)
        .env_remove("PICLOUD_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("running picloud-host")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_migrates(url: &str, backend: &str) {
    for round in 1..=2 {
        let out = host(&["--database-url", url, "migrate"]);
        assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!("migrated {url} (backend {backend})\n"),
            "round {round}"
        );
    }
}

fn lines(out: Output, what: &str) -> Vec<String> {
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_owned).collect()
}

fn assert_all_present(found: &[String], wanted: &[&str], what: &str) {
    for name in wanted {
        assert!(
            found.iter().any(|f| f == name),
            "{what} {name} missing from {found:?}"
        );
    }
}

#[test]
fn migrate_sqlite_twice() {
    let dir = TempDir::new();
    let file = dir.0.join("cli.db");
    let url = format!("sqlite://{}", file.display());
    assert_migrates(&url, "sqlite");
    let sqlite3 = |sql: &str| {
        lines(
            Command::new("sqlite3")
                .arg(&file)
                .arg(sql)
                .output()
                .expect("running sqlite3"),
            sql,
        )
    };
    assert_all_present(
        &sqlite3("select name from sqlite_master where type = 'table'"),
        &TABLES,
        "table",
    );
    assert_all_present(
        &sqlite3("select name from sqlite_master where type = 'index'"),
        &INDEXES,
        "index",
    );
    assert_eq!(
        sqlite3("select count(*) from picloud_migrations"),
        [migration_count("sqlite")],
        "applied once"
    );
    assert_eq!(sqlite3("pragma journal_mode"), ["wal"]);
    assert_eq!(
        sqlite3("select name from sqlite_master where type = 'trigger'"),
        ["outbox_release_next"]
    );
}

#[test]
fn migrate_sqlite_through_the_environment() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.0.join("env.db").display());
    let out = Command::new(host_bin())
        .arg("migrate")
        .env("PICLOUD_DATABASE_URL", &url)
        .output()
        .expect("running picloud-host");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("migrated {url} (backend sqlite)\n")
    );
}

#[tokio::test]
async fn migrate_postgres_twice() {
    let db = FreshPostgres::create().await;
    let url = db.url.clone();
    let checks = tokio::task::spawn_blocking(move || {
        assert_migrates(&url, "postgres");
        let psql = |sql: &str| {
            lines(
                Command::new("psql")
                    .args([url.as_str(), "-Atc", sql])
                    .output()
                    .expect("running psql"),
                sql,
            )
        };
        assert_all_present(
            &psql("select tablename from pg_tables where schemaname = 'picloud'"),
            &TABLES,
            "table",
        );
        assert_all_present(
            &psql("select indexname from pg_indexes where schemaname = 'picloud'"),
            &INDEXES,
            "index",
        );
        assert_eq!(
            psql("select count(*) from picloud.migrations"),
            [migration_count("postgres")],
            "applied once"
        );
        assert_eq!(
            psql(
                "select tgname from pg_trigger where tgrelid = 'picloud.outbox'::regclass and not tgisinternal order by 1"
            ),
            ["outbox_notify", "outbox_release_next"]
        );
    });
    checks.await.unwrap();
}

#[test]
fn unreachable_postgres_is_one_line_without_the_password() {
    let out = host(&[
        "--database-url",
        "postgres://u:hunter2@127.0.0.1:1/x",
        "migrate",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot reach database postgres://u:***@127.0.0.1:1/x: "),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn unsupported_scheme_is_refused() {
    let out = host(&["--database-url", "mysql://u:pw@h/d", "migrate"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "error: unsupported database URL 'mysql://u:***@h/d': use sqlite://FILE or postgres://USER@HOST/DB\n"
    );
}

#[test]
fn unopenable_sqlite_file_names_the_url() {
    let out = host(&[
        "--database-url",
        "sqlite:///nonexistent-dir/picloud/x.db",
        "migrate",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot reach database sqlite:///nonexistent-dir/picloud/x.db: "),
        "{err}"
    );
}

/// How many migrations the repository has for a backend, as psql prints it.
fn migration_count(backend: &str) -> String {
    picloud_tests::db::migration_count(backend).to_string()
}
