//! overlay + runc: a RUN step's changes land in the upper directory, whiteouts included,
//! and nothing the runtime needed leaks into it.

use std::path::Path;

use image_build::overlay::Overlay;
use image_build::sandbox::{self, Network, RunSpec};

fn tools_present() -> bool {
    let ok = Path::new("/bin/busybox").exists()
        && std::process::Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("HYPER_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "runc and busybox are required"
        );
        eprintln!("SKIPPED: runc or /bin/busybox missing");
    }
    ok
}

fn busybox_lower(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::fs::write(dir.join("etc/old"), b"old").unwrap();
}

fn spec(rootfs: &Path, script: &str, network: Network) -> RunSpec {
    RunSpec {
        rootfs: rootfs.to_path_buf(),
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into(), "GREETING=hi".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        network,
        binds: vec![],
        tmpfs: vec![],
    }
}

#[test]
fn run_step_changes_land_in_upper() {
    if !tools_present() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    busybox_lower(&lower);
    let upper = t.path().join("upper");
    let ov = Overlay::mount(
        std::slice::from_ref(&lower),
        &upper,
        &t.path().join("work"),
        &t.path().join("merged"),
    )
    .unwrap();
    let mut lines = Vec::new();
    let out = sandbox::run(
        &spec(ov.path(), "echo $GREETING > /made && rm /etc/old && /bin/busybox hostname && /bin/busybox cat /proc/1/cmdline | /bin/busybox tr '\\0' ' '", Network::None),
        &t.path().join("bundle"),
        &upper,
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert_eq!(out.code, 0, "{}", out.tail);
    assert!(
        lines.iter().any(|l| l == "hyperbuild"),
        "own uts namespace: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("/bin/sh -c")),
        "own pid namespace (pid 1 is the step): {lines:?}"
    );
    ov.unmount().unwrap();
    assert_eq!(std::fs::read_to_string(upper.join("made")).unwrap(), "hi\n");
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(upper.join("etc/old")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "overlay whiteout"
    );
    for leaked in ["proc", "dev", "sys", "etc/hosts", "etc/resolv.conf"] {
        assert!(
            std::fs::symlink_metadata(upper.join(leaked)).is_err(),
            "{leaked} leaked into the layer"
        );
    }
}

#[test]
fn failing_step_reports_exit_code_and_output() {
    if !tools_present() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    busybox_lower(&lower);
    let upper = t.path().join("upper");
    let ov = Overlay::mount(
        &[lower],
        &upper,
        &t.path().join("work"),
        &t.path().join("merged"),
    )
    .unwrap();
    let out = sandbox::run(
        &spec(ov.path(), "echo about to fail; exit 7", Network::Host),
        &t.path().join("bundle"),
        &upper,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.code, 7, "{}", out.tail);
    assert!(out.tail.contains("about to fail"));
}
