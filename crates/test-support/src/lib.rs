//! Shared harness of the integration tests: registries (hyperregistry and CNCF
//! Distribution) on free loopback ports, the workspace's binaries, hyperbuild with its own
//! store and credentials file, test images, a fault-injecting TCP proxy, and the docker /
//! podman / skopeo programs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use oci_core::Digest;

pub mod failover;
pub mod postgres;
pub mod redis;

/// Whether an external program is available. Under CI (`HYPER_REQUIRE_TOOLS=1`) a missing
/// program fails the test; elsewhere the test says loudly that it skipped.
pub fn require_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("HYPER_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{name} is required (HYPER_REQUIRE_TOOLS=1); scripts/test.sh installs it"
        );
        eprintln!("SKIPPED: {name} is not installed; run scripts/test.sh to install it");
    }
    found
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_http(url: &str, child: &mut Child, accept_401: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::blocking::Client::new();
    loop {
        if let Ok(r) = client.get(url).send()
            && (r.status().is_success() || (accept_401 && r.status() == 401))
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{url} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory holding the workspace's binaries (next to the running test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary, built on demand.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    if !p.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", name])
            .status()
            .unwrap();
        assert!(status.success(), "building {name}");
    }
    p
}

/// Path of the hyperregistry binary.
pub fn hyperregistry_bin() -> PathBuf {
    workspace_bin("hyperregistry")
}

/// A registry process on a loopback port.
pub struct Registry {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    /// Its data directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// hyperregistry on a fresh data directory.
    pub fn hyper() -> Registry {
        Registry::hyper_with_env(&[])
    }

    /// hyperregistry on a fresh data directory, with extra `REGISTRY_*` settings (another
    /// metadata database, Redis, S3: replicas share those and keep their own directory).
    pub fn hyper_with_env(env: &[(String, String)]) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(hyperregistry_bin());
        cmd.env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                dir.path().join("data"),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        wait_http(&format!("http://127.0.0.1:{port}/v2/"), &mut child, false);
        Registry { child, port, dir }
    }

    /// Kill the process at once (SIGKILL), as a crashed replica.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CNCF Distribution (`docker-registry`), optionally with htpasswd basic auth.
    pub fn distribution(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(h) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, h).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                path.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_http(
            &format!("http://127.0.0.1:{port}/v2/"),
            &mut child,
            htpasswd.is_some(),
        );
        Registry { child, port, dir }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// hyperbuild with its own store and credentials file.
pub struct Hb {
    /// Its directory (store and credentials).
    pub dir: tempfile::TempDir,
}

impl Default for Hb {
    fn default() -> Self {
        Hb::new()
    }
}

impl Hb {
    /// A hyperbuild with a fresh store.
    pub fn new() -> Hb {
        Hb {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The store directory it passes as `--root`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The credentials file it passes as `--authfile`.
    pub fn authfile(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    /// Run hyperbuild; returns the output whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, None)
    }

    /// Run hyperbuild with `stdin` on its standard input; the output whatever the status.
    pub fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(workspace_bin("hyperbuild"))
            .arg("--root")
            .arg(self.root())
            .arg("--authfile")
            .arg(self.authfile())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hyperbuild {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Run a program and require success; returns stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// podman with the flags that work on this kind of host.
pub fn podman(args: &[&str]) -> String {
    let mut full = vec![
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--runtime",
        "runc",
    ];
    full.extend_from_slice(args);
    sh("podman", &full)
}

/// Flags `podman run` needs here.
/// (`--tls-verify=false`: when concurrent podman processes race on the vfs store, `run`
/// may pull the image again, and the test registries speak plain HTTP.)
pub const PODMAN_RUN: [&str; 7] = [
    "--tls-verify=false",
    "--network",
    "none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
];

/// Make sure a Docker engine answers, starting dockerd if needed.
pub fn ensure_dockerd() {
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        let ok = || {
            Command::new("docker")
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if ok() {
            return;
        }
        let log = std::fs::File::create("/tmp/hyper-test-dockerd.log").unwrap();
        // Left running for the other tests of this process; scripts/test.sh starts and stops
        // dockerd itself, so this only happens in ad-hoc local runs.
        let daemon = Command::new("dockerd")
            .args(["--iptables=false", "--bridge=none"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        std::mem::forget(daemon);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start; see /tmp/hyper-test-dockerd.log"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// Contents of the busybox image the tests use.
pub const HELLO: &str = "hello from a hyperbuild test image\n";

/// A GNU tar header with owner root:root and a fixed mtime.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn tar_gz_layer() -> (Vec<u8>, Digest) {
    let mut raw = tar::Builder::new(Vec::new());
    for d in ["bin", "etc"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        raw.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (package busybox-static)");
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    raw.append_data(&mut h, "bin/busybox", &busybox[..])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, HELLO.len() as u64);
    raw.append_data(&mut h, "etc/hello.txt", HELLO.as_bytes())
        .unwrap();
    let mut l = header(tar::EntryType::Symlink, 0o777, 0);
    raw.append_link(&mut l, "bin/sh", "busybox").unwrap();
    let raw = raw.into_inner().unwrap();
    let diff_id = Digest::sha256_of(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Write a busybox image as an OCI layout at `dir` with tag `tag`.
pub fn busybox_layout(dir: &Path, tag: &str) {
    let (layer, diff_id) = tar_gz_layer();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/busybox", "cat", "/etc/hello.txt"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "hyperbuild test"}]
    }))
    .unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = Digest::sha256_of(b);
        std::fs::write(blobs.join(d.hex()), b).unwrap();
        d
    };
    let cd = put(&config);
    let ld = put(&layer);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld.to_string(), "size": layer.len()}]
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}}]
        }))
        .unwrap(),
    )
    .unwrap();
}

/// Put the busybox image into a registry with skopeo (a client we did not write).
pub fn seed_with_skopeo(registry: &str, repo_tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    busybox_layout(dir.path(), "t");
    sh(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", dir.path().display()),
            &format!("docker://{registry}/{repo_tag}"),
        ],
    );
}

/// Assert a directory holds the busybox image's files.
pub fn assert_busybox_tree(root: &Path) {
    assert_eq!(
        std::fs::read(root.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hello.txt")).unwrap(),
        HELLO
    );
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join("bin/busybox"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
}

/// Write a one-layer image whose layer is a tar.gz holding `size` pseudo-random bytes, as an
/// OCI layout at `dir` with tag `tag`. Returns the layer digest.
pub fn big_layout(dir: &Path, tag: &str, size: usize) -> Digest {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size as u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let mut raw = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
    raw.append_data(&mut h, "big.bin", &data[..]).unwrap();
    let raw = raw.into_inner().unwrap();
    let diff_id = Digest::sha256_of(&raw);
    // gzip (stored blocks, so it is quick): skopeo compresses uncompressed layers itself,
    // which would change the digest the tests check.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&raw).unwrap();
    let layer = gz.finish().unwrap();
    let media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    write_layout(dir, tag, &layer, media_type, &diff_id, "amd64");
    Digest::sha256_of(&layer)
}

/// Write a single-layer image layout (config + manifest + index) around `layer`.
pub fn write_layout(
    dir: &Path,
    tag: &str,
    layer: &[u8],
    layer_type: &str,
    diff_id: &Digest,
    arch: &str,
) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}
    }))
    .unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = Digest::sha256_of(b);
        std::fs::write(blobs.join(d.hex()), b).unwrap();
        d
    };
    let cd = put(&config);
    let ld = put(layer);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": ld.to_string(), "size": layer.len()}]
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}}]
        }))
        .unwrap(),
    )
    .unwrap();
}

/// Deterministic pseudo-random bytes (xorshift; poorly compressible), the same for the same
/// `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The sha256 of a blob as a registry serves it (`GET /v2/<repo>/blobs/<digest>`).
pub fn blob_sha256(registry_host: &str, repo: &str, digest: &oci_core::Digest) -> oci_core::Digest {
    let bytes = reqwest::blocking::get(format!("http://{registry_host}/v2/{repo}/blobs/{digest}"))
        .unwrap()
        .bytes()
        .unwrap();
    oci_core::Digest::sha256_of(&bytes)
}

/// A TCP proxy to a local port that cuts one connection once a byte count is crossed
/// (client→server with `cut_up`, server→client with `cut_down`).
pub struct FaultProxy {
    /// The loopback port clients connect to.
    pub port: u16,
    /// How many connections it has cut so far.
    pub cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultProxy {
    /// Listen on a fresh port, forwarding to `target` and cutting as configured.
    pub fn start(target: u16, cut_up: Option<u64>, cut_down: Option<u64>) -> FaultProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let armed_up = Arc::new(AtomicBool::new(cut_up.is_some()));
        let armed_down = Arc::new(AtomicBool::new(cut_down.is_some()));
        let c = cuts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream,
                            mut to: std::net::TcpStream,
                            total: Arc<AtomicU64>,
                            armed: Arc<AtomicBool>,
                            limit: Option<u64>,
                            cuts: Arc<AtomicUsize>| {
                    std::thread::spawn(move || {
                        use std::io::Read;
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let before = total.fetch_add(n as u64, Ordering::SeqCst);
                            if let Some(l) = limit
                                && before + n as u64 >= l
                                && armed.swap(false, Ordering::SeqCst)
                            {
                                cuts.fetch_add(1, Ordering::SeqCst);
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    up.clone(),
                    armed_up.clone(),
                    cut_up,
                    c.clone(),
                );
                pipe(
                    server,
                    client,
                    down.clone(),
                    armed_down.clone(),
                    cut_down,
                    c.clone(),
                );
            }
        });
        FaultProxy { port, cuts }
    }
}

/// A busybox root filesystem tarball: every applet linked, root in /etc/passwd and
/// /etc/group, /tmp. Returns its path.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-rootfs");
    for d in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let tarball = dir.join("busybox-rootfs.tar");
    sh(
        "tar",
        &[
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tarball.to_str().unwrap(),
            ".",
        ],
    );
    tarball
}

/// One entry of a tarball written by [`entries_tar`].
pub enum TarEntry<'a> {
    /// A directory (mode 0755).
    Dir(&'a str),
    /// A regular file (mode 0644) and its bytes.
    File(&'a str, &'a [u8]),
    /// A symlink and its target, stored as written (hostile ones included).
    Symlink(&'a str, &'a str),
}

/// A plain tarball at `path` holding exactly `entries`, in order, as written: no cleaning, so
/// tests can build the hostile archives an attacker would (`lnk -> /outside`, then
/// `lnk/file`).
pub fn entries_tar(path: &Path, entries: &[TarEntry<'_>]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for e in entries {
        match e {
            TarEntry::Dir(name) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            TarEntry::File(name, data) => {
                let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                b.append_data(&mut h, name, *data).unwrap();
            }
            TarEntry::Symlink(name, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.finish().unwrap();
}

/// The repository's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Copy a directory tree (for editing an example in a test).
pub fn copy_dir(src: &Path, dest: &Path) {
    sh("cp", &["-a", src.to_str().unwrap(), dest.to_str().unwrap()]);
}

/// Debootstrap a Debian bookworm minbase root filesystem (plus `include` packages) under
/// `dir` and tar it. The mirror is `HYPER_DEBIAN_MIRROR` or deb.debian.org. Returns the root
/// filesystem directory and the tarball.
pub fn debootstrap_tarball(dir: &Path, include: &[&str]) -> (PathBuf, PathBuf) {
    let rootfs = dir.join("debian");
    let mirror = std::env::var("HYPER_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let include = format!("--include={}", include.join(","));
    let mut args = vec!["--variant=minbase"];
    if include != "--include=" {
        args.push(&include);
    }
    let root = rootfs.to_str().unwrap().to_string();
    args.extend(["bookworm", &root, &mirror]);
    sh("debootstrap", &args);
    let tarball = dir.join("debian.tar");
    sh("tar", &["-C", &root, "-cf", tarball.to_str().unwrap(), "."]);
    (rootfs, tarball)
}

pub mod s3;
