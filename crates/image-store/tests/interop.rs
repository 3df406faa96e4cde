//! Interop with the real programs: `docker load`/`docker run`, `podman load`/`podman run`,
//! `skopeo` reading the store as an OCI layout, and the archives those programs write read back.
//!
//! A missing program skips its test (prints `SKIPPED: ...`), unless `HYPER_REQUIRE_TOOLS=1`,
//! which turns the skip into a failure. The Docker test starts `dockerd` itself when
//! `docker info` fails. Commands and pitfalls are recorded in `INTEROP.md`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Comp, layer_tar, put_image};
use image_store::ImageStore;
use image_store::archive::{self, ArchiveFormat};
use oci_core::{Descriptor, ParsedManifest};

/// Whether the programs are all on PATH; if not, skip (or fail under `HYPER_REQUIRE_TOOLS=1`).
fn have_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(test, &format!("{} not installed", missing.join(", ")))
}

/// Report a skip; panics instead when tools are required.
fn skip(test: &str, why: &str) -> bool {
    if std::env::var("HYPER_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: {why} (HYPER_REQUIRE_TOOLS=1)");
    }
    println!("SKIPPED: {test}: {why}");
    false
}

/// Run a command, returning its output; panics with both streams on failure.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Make sure a Docker engine answers: if `docker info` fails, start
/// `dockerd --iptables=false --bridge=none` in the background and wait for it (60 s).
fn ensure_dockerd() -> Result<(), String> {
    static START: Mutex<()> = Mutex::new(());
    let _guard = START.lock().unwrap_or_else(|e| e.into_inner());
    let info_ok = || {
        Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if info_ok() {
        return Ok(());
    }
    let log_path = std::env::temp_dir().join("image-store-dockerd.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    // Left running on purpose: later tests (and runs) reuse it.
    Command::new("dockerd")
        .args(["--iptables=false", "--bridge=none"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start dockerd: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if info_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!(
        "dockerd did not answer within 60 s; see {}",
        log_path.display()
    ))
}

/// `podman` with the flags this machine needs, and storage private to `dir`.
fn podman(dir: &Path) -> Command {
    let mut c = Command::new("podman");
    c.args([
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--runtime",
        "runc",
    ])
    .arg("--root")
    .arg(dir.join("podman-root"))
    .arg("--runroot")
    .arg(dir.join("podman-runroot"));
    c
}

/// `podman run` with the flags this machine needs: no network, and rlimits within this
/// process's hard limits (podman's default of 1048576 open files fails with EPERM here).
fn podman_run(dir: &Path) -> Command {
    let hard = |what: &str, default: u64| -> u64 {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|line| line.starts_with(what))
                    .and_then(|line| line[what.len()..].split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(default)
    };
    let nofile = hard("Max open files", 20_000).min(20_000);
    let nproc = hard("Max processes", 4096).min(4096);
    let mut c = podman(dir);
    c.args(["run", "--rm", "--pull=never", "--network", "none"])
        .arg("--ulimit")
        .arg(format!("nofile={nofile}:{nofile}"))
        .arg("--ulimit")
        .arg(format!("nproc={nproc}:{nproc}"));
    c
}

/// A one-layer image holding `bin/busybox` (from the host's static busybox), gzip layer.
fn busybox_image(store: &ImageStore) -> Option<Descriptor> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())?;
    let layer = layer_tar(&[("bin/busybox", 0o755, &busybox)]);
    Some(put_image(
        store,
        &[layer],
        &[Comp::Gzip],
        "amd64",
        &["/bin/busybox", "sh"],
    ))
}

/// A tag unique to this run, so parallel runs and leftovers do not collide.
fn unique_tag() -> String {
    format!(
        "t{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    )
}

fn config_digest(store: &ImageStore, name: &str) -> String {
    let d = store.resolve(name).unwrap().unwrap();
    let m = ParsedManifest::parse(&store.read_blob(&d.digest, 1 << 22).unwrap(), None).unwrap();
    m.config.unwrap().digest.to_string()
}

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
    name: String,
}

fn fixture(test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    let Some(img) = busybox_image(&store) else {
        skip(test, "no /bin/busybox (apt-get install busybox-static)");
        return None;
    };
    let name = format!("localhost:5000/image-store-test/busybox:{}", unique_tag());
    store.set_ref(&name, img).unwrap();
    Some(Fixture { dir, store, name })
}

impl Fixture {
    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

#[test]
fn docker_loads_and_runs_our_docker_archive_and_we_load_docker_save() {
    const T: &str = "docker_loads_and_runs_our_docker_archive";
    if !have_tools(T, &["docker", "dockerd"]) {
        return;
    }
    if let Err(e) = ensure_dockerd() {
        skip(T, &e);
        return;
    }
    let Some(f) = fixture(T) else { return };
    let tar = f.path("docker.tar");
    archive::save(
        &f.store,
        std::slice::from_ref(&f.name),
        ArchiveFormat::Docker,
        &tar,
    )
    .unwrap();

    let out = run(Command::new("docker").arg("load").arg("-i").arg(&tar));
    assert!(
        stdout(&out).contains(&format!("Loaded image: {}", f.name)),
        "{}",
        stdout(&out)
    );
    let out = run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        &f.name,
        "/bin/busybox",
        "echo",
        "hi from docker",
    ]));
    assert_eq!(stdout(&out).trim(), "hi from docker");

    // What Docker writes, we read: same config, so the same image.
    let saved = f.path("docker-save.tar");
    run(Command::new("docker")
        .arg("save")
        .arg("-o")
        .arg(&saved)
        .arg(&f.name));
    let back = ImageStore::open(&f.path("back")).unwrap();
    let names = archive::load(&back, &saved).unwrap();
    assert_eq!(names, std::slice::from_ref(&f.name));
    assert_eq!(
        config_digest(&back, &f.name),
        config_digest(&f.store, &f.name)
    );

    let _ = Command::new("docker").args(["rmi", "-f", &f.name]).output();
}

#[test]
fn podman_loads_and_runs_both_formats_and_we_load_podman_save() {
    const T: &str = "podman_loads_and_runs_both_formats";
    if !have_tools(T, &["podman", "runc"]) {
        return;
    }
    let Some(f) = fixture(T) else { return };
    for (format, file) in [
        (ArchiveFormat::Docker, "docker.tar"),
        (ArchiveFormat::Oci, "oci.tar"),
    ] {
        let tar = f.path(file);
        archive::save(&f.store, std::slice::from_ref(&f.name), format, &tar).unwrap();
        let out = run(podman(f.dir.path()).arg("load").arg("-i").arg(&tar));
        assert!(
            stdout(&out).contains(&f.name),
            "{format:?}: {}",
            stdout(&out)
        );
        let msg = format!("hi from podman {format:?}");
        let out =
            run(podman_run(f.dir.path()).args([f.name.as_str(), "/bin/busybox", "echo", &msg]));
        assert_eq!(stdout(&out).trim(), msg);
        run(podman(f.dir.path()).args(["rmi", "-f", &f.name]));
    }

    // What podman writes (both formats; its docker-archive uses symlinks), we read.
    run(podman(f.dir.path())
        .arg("load")
        .arg("-i")
        .arg(f.path("oci.tar")));
    for fmt in ["docker-archive", "oci-archive"] {
        let saved = f.path(&format!("podman-{fmt}.tar"));
        run(podman(f.dir.path())
            .args(["save", "--format", fmt, "-o"])
            .arg(&saved)
            .arg(&f.name));
        let back = ImageStore::open(&f.path(&format!("back-{fmt}"))).unwrap();
        let names = archive::load(&back, &saved).unwrap();
        assert_eq!(names, std::slice::from_ref(&f.name), "{fmt}");
        assert_eq!(
            config_digest(&back, &f.name),
            config_digest(&f.store, &f.name),
            "{fmt}"
        );
    }
}

#[test]
fn skopeo_reads_the_store_as_an_oci_layout() {
    const T: &str = "skopeo_reads_the_store_as_an_oci_layout";
    if !have_tools(T, &["skopeo"]) {
        return;
    }
    let Some(f) = fixture(T) else { return };
    let root = f.store.root().to_str().unwrap().to_string();
    let oci_ref = format!("oci:{root}:{}", f.name);
    let out = run(Command::new("skopeo").args(["inspect", "--raw", &oci_ref]));
    let desc = f.store.resolve(&f.name).unwrap().unwrap();
    assert_eq!(
        out.stdout,
        f.store.read_blob(&desc.digest, 1 << 22).unwrap(),
        "skopeo sees our manifest"
    );
    // skopeo writes an oci-archive from our layout; we read it back.
    let archive_path = f.path("skopeo.tar");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &oci_ref,
        &format!("oci-archive:{}:{}", archive_path.display(), f.name),
    ]));
    let back = ImageStore::open(&f.path("back")).unwrap();
    let names = archive::load(&back, &archive_path).unwrap();
    assert_eq!(names, std::slice::from_ref(&f.name));
    assert_eq!(
        config_digest(&back, &f.name),
        config_digest(&f.store, &f.name)
    );
}
