//! The Python half of `tests/build.rs`: every `app.py` under
//! `examples/python/*` and `tests/python/*`, built into
//! `target/guests/python/<folder>.wasm` by `sdk-python/picloud-py`.
//!
//! Rule: a component is rebuilt only when it is older than its `app.py`, the
//! SDK or the WIT; the builds run side by side; a missing tool is installed
//! from PyPI at the pinned version, and anything that still fails becomes
//! the error the Python tests report, not a failed build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

const PYTHON_DIRS: [&str; 2] = ["examples/python", "tests/python"];

/// Build the Python guests; returns the source of `python_guests.rs`:
/// `PYTHON`, either the (folder, path) list or why it could not be built.
pub fn build(root: &Path, target_dir: &Path) -> String {
    match build_all(root, target_dir) {
        Ok(built) => {
            let mut src = String::from("pub const PYTHON: Result<&[(&str, &str)], &str> = Ok(&[\n");
            for (name, path) in built {
                src.push_str(&format!(
                    "    ({name:?}, {:?}),\n",
                    path.display().to_string()
                ));
            }
            src.push_str("]);\n");
            src
        }
        Err(why) => {
            println!("cargo:warning=the Python guests were not built: {why}");
            format!("pub const PYTHON: Result<&[(&str, &str)], &str> = Err({why:?});\n")
        }
    }
}

fn build_all(root: &Path, target_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut apps = Vec::new();
    for dir in PYTHON_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let app = entry.path().join("app.py");
            if app.is_file() {
                apps.push((entry.file_name().to_string_lossy().into_owned(), app));
            }
        }
    }
    apps.sort();
    let out_dir = target_dir.join("python");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let shared_inputs = newest(&[root.join("sdk-python"), root.join("wit")]);
    let mut pending = Vec::new();
    let mut built = Vec::new();
    for (name, app) in apps {
        let out = out_dir.join(format!("{name}.wasm"));
        let stale = match modified(&out) {
            Some(at) => at < shared_inputs.max(modified(&app).unwrap_or(SystemTime::now())),
            None => true,
        };
        if stale {
            pending.push((name.clone(), app, out.clone()));
        }
        built.push((name, out));
    }
    if pending.is_empty() {
        return Ok(built);
    }
    let tool = componentize_py(root, target_dir)?;
    let children: Vec<_> = pending
        .iter()
        .map(|(name, app, out)| {
            let child = Command::new("python3")
                .arg(root.join("sdk-python/picloud-py"))
                .arg("build")
                .arg(app)
                .arg("-o")
                .arg(out)
                .env("COMPONENTIZE_PY", &tool)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run python3 to build {name}: {e}"));
            (name, child)
        })
        .collect();
    for (name, child) in children {
        let done = child?
            .wait_with_output()
            .map_err(|e| format!("building {name}: {e}"))?;
        if !done.status.success() {
            // A broken script of ours is a broken build, not a missing tool.
            panic!(
                "building the Python guest {name} failed:\n{}{}",
                String::from_utf8_lossy(&done.stdout),
                String::from_utf8_lossy(&done.stderr)
            );
        }
    }
    Ok(built)
}

/// The pinned componentize-py: `$COMPONENTIZE_PY`, the one on the PATH if
/// it is the pinned version, else one installed into
/// `target/guests/python-tools` (installing it there when absent).
fn componentize_py(root: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    if let Some(tool) = std::env::var_os("COMPONENTIZE_PY") {
        return Ok(tool.into());
    }
    let requirements = root.join("sdk-python/requirements-build.txt");
    let text = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("reading {}: {e}", requirements.display()))?;
    let pinned = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("componentize-py=="))
        .ok_or_else(|| format!("{} pins no componentize-py", requirements.display()))?
        .to_owned();
    let venv = target_dir.join("python-tools");
    let candidates = [
        PathBuf::from("componentize-py"),
        venv.join("bin/componentize-py"),
    ];
    if let Some(found) = candidates
        .iter()
        .find(|c| version(c).as_deref() == Some(pinned.as_str()))
    {
        return Ok(found.clone());
    }
    println!(
        "cargo:warning=installing componentize-py {pinned} from PyPI into {} (the Python guests need it)",
        venv.display()
    );
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "-r"])
        .arg(&requirements))?;
    let tool = venv.join("bin/componentize-py");
    match version(&tool) {
        Some(v) if v == pinned => Ok(tool),
        other => Err(format!(
            "installed componentize-py reports version {other:?}, not {pinned}: install it with `pip install -r {}`",
            requirements.display()
        )),
    }
}

/// `componentize-py --version`'s version, if it runs.
fn version(tool: &Path) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().last().map(str::to_owned)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of any file under `paths`.
fn newest(paths: &[PathBuf]) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if path.ends_with("__pycache__") {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if let Some(at) = modified(&path) {
            newest = newest.max(at);
        }
    }
    newest
}
