//! The command line: what `picloud-host --help` documents.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// PiCloud trigger host: dispatches outbox events to sandboxed WebAssembly
/// trigger scripts, on SQLite (the default) or PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "picloud-host", version, about, long_about = None)]
pub struct Cli {
    /// Database: sqlite://FILE (the embedded default) or postgres://USER@HOST/DB.
    #[arg(
        long,
        global = true,
        env = "PICLOUD_DATABASE_URL",
        default_value = "sqlite://picloud.db",
        hide_env_values = true
    )]
    pub database_url: String,

    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the embedded migrations (harmless to run twice).
    Migrate,
    /// Create and list apps.
    #[command(subcommand)]
    App(AppCmd),
    /// Manage an app's members and their roles.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Deploy, list and remove scripts.
    #[command(subcommand)]
    Script(ScriptCmd),
    /// Register and manage triggers.
    #[command(subcommand)]
    Trigger(TriggerCmd),
    /// Read and write an app's key-value store (writes enqueue kv events).
    #[command(subcommand)]
    Kv(KvCmd),
    /// Send a message to an app's queue (its `trigger add-queue` consumer gets it).
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Publish a message on an app's topic (every matching `trigger add-pubsub` gets it).
    #[command(subcommand)]
    Pubsub(PubsubCmd),
    /// Invoke a script synchronously and print its reply.
    Invoke(InvokeArgs),
    /// Run a component once on one event, in the real sandbox, against a
    /// throwaway database: print its reply or error, its log lines, its KV
    /// writes and the limit it hit. No app set-up needed; exits 1 if the
    /// handler failed.
    Run(RunArgs),
    /// Run the dispatcher (until Ctrl-C, until idle, or until every event is settled).
    Dispatch {
        /// Stop when nothing is due now and nothing is running. Events that
        /// failed and wait for a retry stay in the outbox for a later run.
        #[arg(long, conflicts_with = "until_settled")]
        until_idle: bool,
        /// Stop when every event is settled: succeeded, dead-lettered or
        /// stopped. Waits through retry delays (PICLOUD_TRIGGER_RETRY_*), so
        /// a failing event runs all its attempts and ends as a dead letter.
        #[arg(long)]
        until_settled: bool,
    },
    /// Run the dispatcher and periodic garbage collection until Ctrl-C, and
    /// with --http the HTTP API, /metrics and the dashboard.
    Serve(ServeArgs),
    /// Create, list and revoke API tokens for the HTTP API.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Inspect, replay and ignore dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetterCmd),
    /// What scripts did: every invocation's outcome, timings, error and log lines.
    #[command(subcommand)]
    Runs(RunsCmd),
    /// Print the log lines of an app's recent runs, or follow new ones.
    Logs(LogsArgs),
    /// Delete dead letters, abandoned executions and runs past their retention.
    Gc,
    /// Print a new random key for PICLOUD_SECRET_KEY (64 hex digits).
    SecretKey,
    /// Walk through the whole lifecycle on a fresh SQLite database.
    Demo(DemoArgs),
    /// Measure the runtime and the dispatcher.
    #[command(subcommand)]
    Bench(BenchCmd),
}

/// Output format for listings.
#[derive(Args, Debug, Clone, Copy)]
pub struct Format {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `app ...`
#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// Create an app.
    Create {
        /// Unique app name.
        name: String,
        /// Make this principal the app's admin.
        #[arg(long)]
        admin: Option<String>,
    },
    /// List apps.
    List(Format),
    /// Allow the app's scripts to make outbound HTTP requests to a host.
    /// Nothing is allowed by default. A host that resolves to a loopback,
    /// private or link-local address is refused anyway, unless the
    /// operator allows its range (PICLOUD_OUTBOUND_ALLOW_NETS).
    AllowHost {
        /// App name or id.
        app: String,
        /// scheme://host[:port]: https://api.example.com,
        /// https://*.example.com (every name under example.com),
        /// http://10.0.0.5:8080. The port defaults to the scheme's.
        pattern: String,
    },
    /// Stop allowing a host (the pattern as `app hosts` lists it, or any
    /// spelling of it).
    DenyHost {
        /// App name or id.
        app: String,
        /// The pattern.
        pattern: String,
    },
    /// List the hosts the app's scripts may reach.
    Hosts {
        /// App name or id.
        app: String,
        #[command(flatten)]
        format: Format,
    },
    /// Set, list and remove the app's variables, which scripts read through
    /// wasi:config (the SDK's `config::get`).
    #[command(subcommand)]
    Var(VarCmd),
    /// Set and remove the app's secrets: variables encrypted at rest with
    /// PICLOUD_SECRET_KEY, readable only by scripts, never listed.
    #[command(subcommand)]
    Secret(SecretCmd),
}

/// `app var ...`
#[derive(Subcommand, Debug)]
pub enum VarCmd {
    /// Set a variable (replacing a variable or secret of that name).
    Set {
        /// App name or id.
        app: String,
        /// Letters, digits, '_', '-' and '.'.
        name: String,
        /// The value (text); `-` reads it from standard input.
        value: String,
    },
    /// List the app's variables and secrets; a secret's value is never shown.
    List {
        /// App name or id.
        app: String,
        #[command(flatten)]
        format: Format,
    },
    /// Remove a variable or secret.
    Unset {
        /// App name or id.
        app: String,
        /// The name.
        name: String,
    },
}

/// `app secret ...`
#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Set a secret, encrypted with PICLOUD_SECRET_KEY (replacing a variable
    /// or secret of that name). Give `-` and pipe the value in, so that it
    /// stays out of the shell's history.
    Set {
        /// App name or id.
        app: String,
        /// Letters, digits, '_', '-' and '.'.
        name: String,
        /// `-` reads the value from standard input (a trailing newline is
        /// dropped); anything else is the value itself.
        value: String,
    },
    /// Remove a secret.
    Unset {
        /// App name or id.
        app: String,
        /// The name.
        name: String,
    },
}

/// `member ...`
#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Add a member, or change their role.
    Add {
        /// App name or id.
        app: String,
        /// The principal.
        principal: String,
        /// admin, developer or viewer.
        role: String,
    },
    /// Remove a member.
    Remove {
        /// App name or id.
        app: String,
        /// The principal.
        principal: String,
    },
    /// List an app's members.
    List {
        /// App name or id.
        app: String,
        #[command(flatten)]
        format: Format,
    },
}

/// `script ...`
#[derive(Subcommand, Debug)]
pub enum ScriptCmd {
    /// Validate and store a component (built with `cargo build --target wasm32-wasip2`).
    Deploy {
        /// App name or id.
        app: String,
        /// Script name (replaces the code of an existing script of that name).
        name: String,
        /// The .wasm component.
        file: PathBuf,
        /// Deploy as this principal (checked for the deploy capability).
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// List an app's scripts.
    List {
        /// App name or id.
        app: String,
        #[command(flatten)]
        format: Format,
    },
    /// Remove a script and its triggers.
    Remove {
        /// App name or id.
        app: String,
        /// Script name or id.
        name: String,
    },
}

/// `trigger ...`
#[derive(Subcommand, Debug)]
pub enum TriggerCmd {
    /// Run a script on KV writes in matching collections.
    AddKv {
        /// `*`, `prefix*` or an exact collection name.
        #[arg(long)]
        collection: String,
        /// Comma-separated subset of set,delete (default: both).
        #[arg(long, default_value = "")]
        ops: String,
        /// Run the events of one key one at a time, in write order: while
        /// one runs or waits for its retry, later ones of that key wait
        /// (other keys do not). Default: concurrent and unordered.
        #[arg(long)]
        ordered: bool,
        #[command(flatten)]
        new: NewTriggerArgs,
    },
    /// Run a script on new dead letters whose original source matches.
    AddDeadLetter {
        /// `*`, `prefix*` or an exact source.
        #[arg(long, default_value = "*")]
        source: String,
        #[command(flatten)]
        new: NewTriggerArgs,
    },
    /// Run a script on a cron schedule: one `cron`/`tick` event per tick,
    /// once however many dispatchers run.
    AddCron {
        /// Five cron fields (minute hour day month weekday), or six with
        /// seconds first: "0 */5 * * * *" is every five minutes.
        #[arg(long)]
        schedule: String,
        /// The IANA time zone the schedule is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Ticks missed while no dispatcher ran: `last` runs the newest of
        /// them once, `skip` runs none.
        #[arg(long, default_value = "last")]
        catch_up: String,
        #[command(flatten)]
        new: NewTriggerArgs,
    },
    /// Consume an app's queue with a script (one consumer per queue).
    AddQueue {
        /// The queue's name.
        #[arg(long)]
        queue: String,
        /// Hand the script up to N messages at once (`queue`/`batch`
        /// events; it retries single ones with `queue::retry`).
        #[arg(long, default_value_t = 1)]
        batch: u32,
        #[command(flatten)]
        new: NewTriggerArgs,
    },
    /// Run a script on messages published to matching topics.
    AddPubsub {
        /// `*`, `prefix*` or an exact topic.
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        new: NewTriggerArgs,
    },
    /// List an app's triggers.
    List {
        /// App name or id.
        app: String,
        #[command(flatten)]
        format: Format,
    },
    /// Enable a trigger.
    Enable {
        /// Trigger id.
        id: String,
    },
    /// Disable a trigger (it stops matching).
    Disable {
        /// Trigger id.
        id: String,
    },
    /// Remove a trigger.
    Remove {
        /// Trigger id.
        id: String,
    },
}

/// What every `trigger add-*` takes: the app, the script, whom it runs as,
/// a name, and the retry policy.
#[derive(clap::Args, Debug)]
pub struct NewTriggerArgs {
    /// App name or id.
    pub app: String,
    /// Script name or id.
    #[arg(long)]
    pub script: String,
    /// The principal the script runs as (needs app admin).
    #[arg(long = "as")]
    pub principal: String,
    /// A name for listings.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// A trigger's retry policy and depth limit; each flag left out is the
/// host's default (`PICLOUD_TRIGGER_RETRY_*`, `PICLOUD_MAX_TRIGGER_DEPTH`).
#[derive(clap::Args, Debug, Default)]
pub struct RetryArgs {
    /// Attempts before the event is dead-lettered (1: never retried).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// The shape of the delays: exponential, constant or linear.
    #[arg(long)]
    pub backoff: Option<String>,
    /// The first delay, in milliseconds.
    #[arg(long)]
    pub base_ms: Option<u64>,
    /// The largest delay, in milliseconds.
    #[arg(long)]
    pub cap_ms: Option<u64>,
    /// How far each delay may move at random, as a fraction (0.1: ±10%).
    #[arg(long)]
    pub jitter: Option<f64>,
    /// Dead-letter a failing event older than this many milliseconds
    /// instead of retrying it.
    #[arg(long)]
    pub max_age_ms: Option<u64>,
    /// This trigger's own depth limit, below PICLOUD_MAX_TRIGGER_DEPTH: an
    /// event deeper than this is dead-lettered for it without running, the
    /// dead letter naming the triggers that led to it.
    #[arg(long)]
    pub max_depth: Option<u32>,
}

/// `queue ...`
#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Send a JSON message to a queue.
    Send {
        /// App name or id.
        app: String,
        /// The queue's name.
        queue: String,
        /// The message, as JSON.
        #[arg(long)]
        body: String,
        /// Deliver it no sooner than this many milliseconds from now.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

/// `pubsub ...`
#[derive(Subcommand, Debug)]
pub enum PubsubCmd {
    /// Publish a JSON message on a topic.
    Publish {
        /// App name or id.
        app: String,
        /// The topic.
        topic: String,
        /// The message, as JSON.
        #[arg(long)]
        body: String,
    },
}

/// `kv ...`
#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Write a JSON value (and enqueue its kv event).
    Set {
        /// App name or id.
        app: String,
        /// Collection.
        collection: String,
        /// Key.
        key: String,
        /// JSON value (`-`: read it from standard input).
        json: String,
        /// Act as this principal (needs write access).
        #[arg(long = "as")]
        principal: String,
    },
    /// Read a value.
    Get {
        /// App name or id.
        app: String,
        /// Collection.
        collection: String,
        /// Key.
        key: String,
        /// Act as this principal (needs read access); operator access if absent.
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Delete a value (and enqueue its kv event).
    Delete {
        /// App name or id.
        app: String,
        /// Collection.
        collection: String,
        /// Key.
        key: String,
        /// Act as this principal (needs write access).
        #[arg(long = "as")]
        principal: String,
    },
    /// List keys of a collection.
    List {
        /// App name or id.
        app: String,
        /// Collection.
        collection: String,
        /// Act as this principal (needs read access); operator access if absent.
        #[arg(long = "as")]
        principal: Option<String>,
        #[command(flatten)]
        format: Format,
    },
}

/// `invoke ...`
#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// App name or id.
    pub app: String,
    /// Script name or id.
    pub script: String,
    /// JSON payload.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Invoke as this principal (needs invoke access).
    #[arg(long = "as")]
    pub principal: String,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// `run FILE.wasm --event EVENT.json [--kv SEED.json]`
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The component (`target/wasm32-wasip2/release/NAME.wasm`).
    pub file: PathBuf,
    /// The event, as JSON: `{"source":"kv","op":"set","payload":{"collection":"c","key":"k","value":1,"version":1}}`.
    /// Every field is optional (default: a synchronous `http`/`invoke` with a null payload).
    #[arg(long)]
    pub event: Option<PathBuf>,
    /// KV entries to start from, as JSON: `{"collection":{"key":value}}`.
    #[arg(long = "kv")]
    pub kv: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `serve ...`
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Also serve the HTTP API, /metrics and the dashboard on this address
    /// (e.g. 127.0.0.1:8080; port 0 picks a free one, printed at start).
    #[arg(long, env = "PICLOUD_HTTP")]
    pub http: Option<std::net::SocketAddr>,
}

/// `token ...`
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Make a token that authenticates as PRINCIPAL; prints its secret once
    /// (only its hash is stored).
    Create {
        /// The principal the token acts as (its rights are the principal's).
        principal: String,
        /// A name for listings.
        #[arg(long, default_value = "api")]
        name: String,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Revoke a token: its next request is refused.
    Revoke {
        /// Token id (see `token list`).
        id: String,
    },
}

/// `dead-letters ...`
#[derive(Subcommand, Debug)]
pub enum DeadLetterCmd {
    /// List dead letters, oldest first.
    List {
        /// Only this app's (name or id).
        app: Option<String>,
        /// Only unresolved ones.
        #[arg(long)]
        unresolved: bool,
        /// Only with this original source.
        #[arg(long)]
        source: Option<String>,
        /// Only of this trigger id.
        #[arg(long)]
        trigger: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Show one dead letter in full, with every run of its original event.
    Show {
        /// Dead letter id.
        id: String,
        /// Act as this principal (needs logs access); operator access if absent.
        #[arg(long = "as")]
        principal: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Count an app's unresolved dead letters (the dashboard badge).
    Count {
        /// App name or id.
        app: String,
    },
    /// Re-enqueue dead letters for their trigger and mark them replayed.
    Replay {
        /// Dead letter ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Replay every unresolved dead letter of an app matching a filter.
    ReplayAll {
        /// App name or id.
        app: String,
        /// Only with this original source.
        #[arg(long)]
        source: Option<String>,
        /// Only of this trigger id.
        #[arg(long)]
        trigger: Option<String>,
        /// Only created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only created before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
    },
    /// Resolve one dead letter with any resolution of the vocabulary
    /// (replayed, ignored, handled_by_script, handler_failed).
    Resolve {
        /// Dead letter id.
        id: String,
        /// The resolution.
        resolution: String,
    },
    /// Mark dead letters ignored.
    Ignore {
        /// Dead letter ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// `runs ...`
#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// List an app's runs, newest first.
    List {
        /// App name or id.
        app: String,
        /// Only this script's (name or id).
        #[arg(long)]
        script: Option<String>,
        /// Only this trigger's (id).
        #[arg(long)]
        trigger: Option<String>,
        /// Only this event's: every attempt, every trigger.
        #[arg(long)]
        event: Option<String>,
        /// Only runs that did not succeed.
        #[arg(long)]
        failed: bool,
        /// Only runs that finished at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Act as this principal (needs logs access); operator access if absent.
        #[arg(long = "as")]
        principal: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Show one run in full, with its log lines.
    Show {
        /// Run id.
        id: String,
        /// Act as this principal (needs logs access); operator access if absent.
        #[arg(long = "as")]
        principal: Option<String>,
        #[command(flatten)]
        format: Format,
    },
}

/// `logs ...`
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// App name or id.
    pub app: String,
    /// Only this script's (name or id).
    #[arg(long)]
    pub script: Option<String>,
    /// Only this trigger's (id).
    #[arg(long)]
    pub trigger: Option<String>,
    /// Keep printing new lines as runs finish, also runs of a dispatcher in
    /// another process, until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
    /// Without --follow: how many recent runs to print the lines of.
    #[arg(long, default_value_t = 20)]
    pub runs: u32,
    /// Act as this principal (needs logs access); operator access if absent.
    #[arg(long = "as")]
    pub principal: Option<String>,
}

/// `demo ...`
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the example components are (default: built from this repository).
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Keep the demo database at this path instead of a temporary file.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

/// `bench ...`
#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// What one outbound HTTP request costs a script: invocations of the
    /// http-probe fixture making a GET to a server on 127.0.0.1, against
    /// the same GET from the host directly and a request the allow-list
    /// refuses.
    Outbound {
        /// The probe component (default: tests/fixtures/http-probe, built
        /// from this repository).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Requests per measurement.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
    },
    /// Per-invocation overhead of a no-op component, and cold vs warm start.
    Runtime {
        /// The no-op component (default: the fixture built from this repository).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Invocations per measurement.
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
    },
    /// Fill the outbox with events (kv, queue or pubsub) for one no-op
    /// trigger and drain it.
    Dispatch {
        /// The no-op component (default: the fixture built from this repository).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// How many events.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Single events timed on the idle dispatcher afterwards.
        #[arg(long, default_value_t = 200)]
        idle_samples: usize,
        /// One pass per entry, each with that PICLOUD_RUNS mode, then their
        /// throughputs compared: `--runs off,all,off,all` measures what run
        /// records cost. Default: one pass with PICLOUD_RUNS (all).
        #[arg(long, value_delimiter = ',')]
        runs: Vec<String>,
        /// Register the bench trigger with `--ordered` (per-key order), to
        /// measure what ordering costs against a pass without it.
        #[arg(long)]
        ordered: bool,
        /// Spread the events over this many keys in turn (default: a key
        /// per event). With `--ordered`, few keys run nearly one at a time.
        #[arg(long)]
        keys: Option<u64>,
        /// Beside the bench app, another app with this many events waiting
        /// on one key of an ordered trigger, behind a first one that waits a
        /// day for its retry: shows that one tenant's backlog does not slow
        /// the others.
        #[arg(long, default_value_t = 0)]
        backlog: u64,
        /// Where the events come from: `kv` writes, messages to a `queue`,
        /// or messages published on a `pubsub` topic, each with its one
        /// no-op trigger.
        #[arg(long, default_value = "kv")]
        source: String,
        /// With `--source queue`: the consumer takes batches of up to N.
        #[arg(long, default_value_t = 1)]
        batch: u32,
    },
    /// What the HTTP API costs on an app with many dead letters: p50/p99 of
    /// the badge count and of pages of the dead-letter list, over real HTTP
    /// on 127.0.0.1, and the query plan of the badge.
    Api {
        /// Dead letters to seed the measured app with.
        #[arg(long, default_value_t = 100_000)]
        dead_letters: u64,
        /// Requests timed per route.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
    },
    /// Commit-to-start latency of events the embedding application commits
    /// on its own pool: without telling the host, then with
    /// `TriggerHost::notify` after each commit.
    Wake {
        /// The no-op component (default: the fixture built from this repository).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Single events per pass.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// (internal) time a fresh process's first call; used by `bench runtime`.
    #[command(hide = true)]
    FirstCall {
        /// The component.
        #[arg(long)]
        wasm: PathBuf,
        /// The compile cache directory.
        #[arg(long)]
        cache_dir: PathBuf,
    },
}
