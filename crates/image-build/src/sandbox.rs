//! Running a RUN step: an OCI runtime bundle over the step's overlay, executed by `runc`
//! in new mount, pid, ipc and uts namespaces (and a new network namespace for
//! `--network=none`), with `/proc`, `/dev`, `/sys`, `/etc/hosts` and `/etc/resolv.conf`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{BuildError, Result};

/// Network mode of a RUN step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The host's network (what `default` means for this builder: no CNI, no slirp).
    Host,
    /// A fresh network namespace with only loopback.
    None,
}

/// A bind mount into the sandbox.
#[derive(Debug, Clone)]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the sandbox.
    pub target: String,
    /// Read-only?
    pub readonly: bool,
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The merged root filesystem.
    pub rootfs: PathBuf,
    /// argv.
    pub args: Vec<String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Network mode.
    pub network: Network,
    /// Extra bind mounts (cache, bind, secret mounts).
    pub binds: Vec<Bind>,
    /// Extra tmpfs mounts.
    pub tmpfs: Vec<String>,
}

/// How a RUN ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Exit code (128 + signal for signals).
    pub code: i32,
    /// The last lines of output (stdout and stderr interleaved).
    pub tail: String,
}

const CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths the runtime creates as mount points when missing; removed again after the run so
/// they do not leak into the layer.
const MOUNT_POINTS: [&str; 5] = ["proc", "dev", "sys", "etc/hosts", "etc/resolv.conf"];

fn spec_json(spec: &RunSpec, hosts: &Path, resolv: &Path) -> serde_json::Value {
    let mut mounts = vec![
        serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        serde_json::json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        serde_json::json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        serde_json::json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        // sysfs can only be mounted in a network namespace of one's own; otherwise bind it.
        if spec.network == Network::None {
            serde_json::json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]})
        } else {
            serde_json::json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        },
        serde_json::json!({"destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind", "ro"]}),
        serde_json::json!({"destination": "/etc/resolv.conf", "type": "bind", "source": resolv, "options": ["rbind", "ro"]}),
    ];
    for b in &spec.binds {
        let mut opts = vec!["rbind"];
        if b.readonly {
            opts.push("ro");
        }
        mounts.push(serde_json::json!({"destination": b.target, "type": "bind", "source": b.source, "options": opts}));
    }
    for t in &spec.tmpfs {
        mounts.push(serde_json::json!({"destination": t, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    }
    let mut namespaces = vec![
        serde_json::json!({"type": "pid"}),
        serde_json::json!({"type": "ipc"}),
        serde_json::json!({"type": "uts"}),
        serde_json::json!({"type": "mount"}),
    ];
    if spec.network == Network::None {
        namespaces.push(serde_json::json!({"type": "network"}));
    }
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": spec.additional_gids},
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 20000u64, "soft": 20000u64}],
            "noNewPrivileges": false
        },
        "root": {"path": std::path::absolute(&spec.rootfs).unwrap_or_else(|_| spec.rootfs.clone()), "readonly": false},
        "hostname": "hyperbuild",
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Run a command in a sandbox. `upper` is the overlay's upper directory: mount points the
/// runtime had to create are removed from it afterwards. Output lines go to `echo`.
pub fn run(
    spec: &RunSpec,
    bundle: &Path,
    upper: &Path,
    echo: &mut dyn FnMut(&str),
) -> Result<RunOutcome> {
    std::fs::create_dir_all(bundle).map_err(|e| BuildError::io(bundle, e))?;
    let missing: Vec<&str> = MOUNT_POINTS
        .iter()
        .copied()
        .filter(|p| std::fs::symlink_metadata(spec.rootfs.join(p)).is_err())
        .collect();
    let hosts = bundle.join("hosts");
    let resolv = bundle.join("resolv.conf");
    std::fs::write(
        &hosts,
        "127.0.0.1\tlocalhost hyperbuild\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .map_err(|e| BuildError::io(&hosts, e))?;
    let host_resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(&resolv, host_resolv).map_err(|e| BuildError::io(&resolv, e))?;
    let config = bundle.join("config.json");
    std::fs::write(
        &config,
        serde_json::to_vec_pretty(&spec_json(spec, &hosts, &resolv)).expect("json"),
    )
    .map_err(|e| BuildError::io(&config, e))?;

    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!(
        "hyperbuild-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let state = Path::new("/run/hyperbuild-runc");
    let mut child = Command::new("runc")
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BuildError::Sandbox(format!("starting runc (is it installed?): {e}")))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    let err_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            let _ = tx2.send(line);
        }
    });
    let stdout = child.stdout.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in rx {
        echo(&line);
        tail.push_back(line);
        if tail.len() > 30 {
            tail.pop_front();
        }
    }
    let _ = out_thread.join();
    let _ = err_thread.join();
    let status = child
        .wait()
        .map_err(|e| BuildError::Sandbox(format!("waiting for runc: {e}")))?;
    // Leftover state of a killed container would block the id; remove it either way.
    let _ = Command::new("runc")
        .arg("--root")
        .arg(state)
        .args(["delete", "-f", &id])
        .output();
    for p in missing {
        remove_mount_point(upper, p);
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let tail = tail.into_iter().map(|l| l + "\n").collect();
    Ok(RunOutcome { code, tail })
}

/// Remove a mount point the runtime created in the upper dir, and parents it created, when
/// they are still empty.
fn remove_mount_point(upper: &Path, rel: &str) {
    let p = upper.join(rel);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir(&p);
        }
        Ok(m) if m.len() == 0 => {
            let _ = std::fs::remove_file(&p);
        }
        _ => {}
    }
    if let Some(parent) = Path::new(rel)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        let _ = std::fs::remove_dir(upper.join(parent));
    }
}
