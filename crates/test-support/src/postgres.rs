//! PostgreSQL for tests: a fresh, empty database per call of [`database_url`].
//!
//! With `HYPER_TEST_POSTGRES_URL` set (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`, as `scripts/test.sh` exports), databases are
//! created on that server. Otherwise the first call starts one server for the test process
//! (Debian's binaries under `/usr/lib/postgresql/<version>/bin`): `initdb` into a temporary
//! directory, trust authentication, a free loopback port, fsync off. PostgreSQL refuses to
//! run as root, so as root the server runs as the `postgres` user. The server gets SIGINT
//! (fast shutdown) when the test process exits, and a watchdog process removes the directory
//! once it has stopped, whatever way the test process ended.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::free_port;

/// The environment variable naming an admin URL of an already running server.
pub const URL_ENV: &str = "HYPER_TEST_POSTGRES_URL";

/// The directory holding PostgreSQL's server programs: the newest
/// `/usr/lib/postgresql/<version>/bin` that has `postgres`.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Whether PostgreSQL can be used: a server URL in `HYPER_TEST_POSTGRES_URL`, or the server
/// programs installed. Missing programs follow [`crate::require_tool`]: a failure under
/// `HYPER_REQUIRE_TOOLS=1`, else a loud skip (`false`).
pub fn available() -> bool {
    if std::env::var_os(URL_ENV).is_some() && psql().is_some() {
        return true;
    }
    if bin_dir().is_some() {
        return true;
    }
    assert!(
        std::env::var("HYPER_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "PostgreSQL is required (HYPER_REQUIRE_TOOLS=1): /usr/lib/postgresql/*/bin/postgres is missing; scripts/test.sh installs it"
    );
    eprintln!("SKIPPED: PostgreSQL is not installed; run scripts/test.sh to install it");
    false
}

fn psql() -> Option<PathBuf> {
    if let Some(p) = bin_dir().map(|b| b.join("psql")).filter(|p| p.exists()) {
        return Some(p);
    }
    crate::require_tool("psql").then(|| PathBuf::from("psql"))
}

/// The admin URL of the server tests use (starting this process's server if needed).
pub fn admin_url() -> String {
    if let Ok(url) = std::env::var(URL_ENV) {
        return url;
    }
    static SERVER: OnceLock<Result<LocalServer, String>> = OnceLock::new();
    match SERVER.get_or_init(LocalServer::start) {
        Ok(s) => s.url.clone(),
        Err(e) => panic!("starting PostgreSQL for the tests: {e}"),
    }
}

/// The URL of a new, empty database (named `t_<pid>_<n>_<nanos>`) on the test server.
pub fn database_url() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let admin = admin_url();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "t_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let psql = psql().expect("psql is needed to create test databases");
    let out = Command::new(&psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &admin, "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "CREATE DATABASE {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    with_database(&admin, &name)
}

/// `url` with its database (the path) replaced by `name`, query string kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    format!("{scheme}://{authority}/{name}{query}")
}

/// This process's server: stopped when the process exits.
struct LocalServer {
    url: String,
    /// Held open for the life of the process: its closing tells the watchdog to clean up.
    _watchdog_stdin: ChildStdin,
}

/// The uid and gid of the `postgres` account (the server cannot run as root).
fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("running id: {e}"))?;
        if !out.status.success() {
            return Err("no postgres user (the postgresql package creates it)".into());
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("id {flag} postgres: {e}"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Run as `ids` (when set) in `dir`.
fn command(program: &Path, ids: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir).env("LC_ALL", "C");
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Waits for EOF on stdin (the test process is gone), stops the server the pid file names,
/// then removes the directory. Ignores the signals a terminal sends to the whole group.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
cat >/dev/null
pidfile="$1/data/postmaster.pid"
if [ -e "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile")
    kill -INT "$pid" 2>/dev/null
    i=0
    while [ -e "$pidfile" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$pidfile" ] && kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
"#;

impl LocalServer {
    fn start() -> Result<LocalServer, String> {
        let bin = bin_dir().ok_or("no /usr/lib/postgresql/*/bin/postgres")?;
        let root = is_root();
        let dir = std::env::temp_dir().join(format!(
            "hyper-pg-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // The watchdog first, so the directory goes away whatever fails next.
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "watchdog"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting the cleanup watchdog: {e}"))?;
        let watchdog_stdin = watchdog.stdin.take().expect("piped stdin");
        let ids = if root { Some(postgres_ids()?) } else { None };
        let sock = dir.join("sock");
        std::fs::create_dir(&sock).map_err(|e| format!("creating {}: {e}", sock.display()))?;
        if let Some((uid, gid)) = ids {
            for p in [&dir, &sock] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
        }
        let data = dir.join("data");
        let out = command(&bin.join("initdb"), ids, &dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .arg("-D")
            .arg(&data)
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log"))
            .map_err(|e| format!("creating the server log: {e}"))?;
        let mut cmd = command(&bin.join("postgres"), ids, &dir);
        cmd.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sock)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only sets this (child) process's parent-death
        // signal. It runs after the uid change, which would otherwise clear it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The parent-death signal fires when the spawning *thread* ends, so spawn from a
        // thread that lives as long as the process.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-parent".into())
            .spawn(move || {
                let child = cmd.spawn();
                let ok = child.is_ok();
                let _ = tx.send(child);
                if ok {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .map_err(|e| format!("spawning a thread: {e}"))?;
        let mut child: Child = rx
            .recv()
            .map_err(|e| format!("postgres parent thread: {e}"))?
            .map_err(|e| format!("starting postgres: {e}"))?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                return Err(format!("postgres exited with {status}: {log}"));
            }
            if Instant::now() > deadline {
                return Err("postgres did not become ready in 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The Child handle is not kept: the server is stopped by the parent-death signal and
        // the watchdog, never by a Drop that a static would not run.
        drop(child);
        Ok(LocalServer {
            url,
            _watchdog_stdin: watchdog_stdin,
        })
    }
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
