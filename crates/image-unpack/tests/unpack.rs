//! What applying layers produces: contents, metadata, links, whiteouts, replacement, limits.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use image_unpack::{Compression, UnpackError, UnpackOptions};
use tar::EntryType;

fn mtime(p: &Path) -> i64 {
    std::fs::symlink_metadata(p).unwrap().mtime()
}

#[test]
fn files_dirs_modes_and_mtimes_over_three_compressions() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let l1 = Layer::new()
        .dir_with("etc", 0o755, 1_500_000_000, 0, 0)
        .file_with(
            "etc/hosts",
            b"127.0.0.1 localhost\n",
            0o644,
            1_500_000_100,
            0,
            0,
        )
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/su", b"#!setuid", 0o4755)
        .file("usr/bin/wall", b"#!setgid", 0o2755)
        .dir("tmp", 0o1777)
        .dir("locked", 0o500)
        .file("locked/inner", b"inside a read-only dir", 0o400)
        .tar();
    apply(root, &l1, Compression::None).unwrap();
    assert_eq!(read(&root.join("etc/hosts")), "127.0.0.1 localhost\n");
    assert_eq!(mode(&root.join("etc/hosts")), 0o644);
    assert_eq!(mtime(&root.join("etc/hosts")), 1_500_000_100);
    // Directory times are set after their contents are written.
    assert_eq!(mtime(&root.join("etc")), 1_500_000_000);
    assert_eq!(mode(&root.join("usr/bin/su")), 0o4755);
    assert_eq!(mode(&root.join("usr/bin/wall")), 0o2755);
    assert_eq!(mode(&root.join("tmp")), 0o1777);
    assert_eq!(mode(&root.join("locked")), 0o500);
    assert_eq!(read(&root.join("locked/inner")), "inside a read-only dir");

    let l2 = Layer::new()
        .dir_with("etc", 0o750, 1_600_000_000, 0, 0)
        .file("etc/hosts", b"replaced", 0o600)
        .file("etc/new", b"new", 0o640)
        .tar();
    apply(root, &l2, Compression::Gzip).unwrap();
    assert_eq!(read(&root.join("etc/hosts")), "replaced");
    assert_eq!(mode(&root.join("etc/hosts")), 0o600);
    assert_eq!(read(&root.join("etc/new")), "new");
    // The existing directory stays and takes the new metadata.
    assert_eq!(mode(&root.join("etc")), 0o750);
    assert_eq!(mtime(&root.join("etc")), 1_600_000_000);
    assert!(root.join("usr/bin/su").exists());

    let l3 = Layer::new()
        .symlink("usr/bin/sudo", "su")
        .symlink("etc/abs", "/etc/hosts")
        .hardlink("usr/bin/su-hard", "usr/bin/su")
        .raw(
            b"/usr/bin/su-hard-abs",
            EntryType::Link,
            b"/usr/bin/su",
            b"",
        )
        .tar();
    apply(root, &l3, Compression::Zstd).unwrap();
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/sudo")).unwrap(),
        Path::new("su")
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/abs")).unwrap(),
        Path::new("/etc/hosts")
    );
    let a = std::fs::metadata(root.join("usr/bin/su")).unwrap();
    let b = std::fs::metadata(root.join("usr/bin/su-hard")).unwrap();
    let c = std::fs::metadata(root.join("usr/bin/su-hard-abs")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
    assert_eq!(mtime(&root.join("usr/bin/sudo")), MTIME as i64);
}

#[test]
fn diff_id_is_sha256_of_the_uncompressed_tar() {
    let tar = Layer::new()
        .dir("a", 0o755)
        .file("a/one", &vec![7u8; 100_000], 0o644)
        .file("a/two", b"two", 0o644)
        .symlink("a/three", "two")
        .tar();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let t = tempfile::tempdir().unwrap();
        let stats = apply(t.path(), &tar, c).unwrap();
        assert_eq!(stats.diff_id.hex(), sha256_hex(&tar), "{c}");
        assert_eq!(stats.diff_id.algorithm(), oci_core::Algorithm::Sha256);
        assert_eq!(stats.bytes, tar.len() as u64, "{c}");
        assert_eq!(stats.entries, 4, "{c}");
        assert_eq!(
            std::fs::read(t.path().join("a/one")).unwrap(),
            vec![7u8; 100_000]
        );
    }
    // Trailing bytes after the end-of-archive blocks count too.
    let mut padded = tar.clone();
    padded.extend(std::iter::repeat_n(0u8, 10 * 512));
    let t = tempfile::tempdir().unwrap();
    let stats = apply(t.path(), &padded, Compression::Gzip).unwrap();
    assert_eq!(stats.diff_id.hex(), sha256_hex(&padded));
    assert_eq!(stats.bytes, padded.len() as u64);
}

#[test]
fn concatenated_gzip_members_and_zstd_frames() {
    let tar = Layer::new()
        .file("x", &vec![1u8; 5000], 0o644)
        .file("y", b"y", 0o644)
        .tar();
    let (a, b) = tar.split_at(1536);
    for (c, blob) in [
        (Compression::Gzip, [gzip(a), gzip(b)].concat()),
        (Compression::Zstd, [zstd(a), zstd(b)].concat()),
    ] {
        let t = tempfile::tempdir().unwrap();
        let stats = image_unpack::apply_layer(&blob[..], c, t.path(), &opts()).unwrap();
        assert_eq!(stats.diff_id.hex(), sha256_hex(&tar), "{c}");
        assert_eq!(read(&t.path().join("y")), "y");
    }
}

#[test]
fn unpack_picks_compression_from_content() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs/not/yet/there");
    let tars = [
        Layer::new().file("one", b"1", 0o644).tar(),
        Layer::new().file("two", b"2", 0o644).tar(),
        Layer::new().file("three", b"3", 0o644).tar(),
        Layer::new().file("four", b"4", 0o644).tar(),
    ];
    let blobs = [
        (
            compress(&tars[0], Compression::None),
            "application/vnd.oci.image.layer.v1.tar",
        ),
        (
            compress(&tars[1], Compression::Gzip),
            "application/octet-stream",
        ),
        (
            compress(&tars[2], Compression::Zstd),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        // Mislabelled: gzip content under a plain tar media type.
        (
            compress(&tars[3], Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar",
        ),
    ];
    let mut paths = Vec::new();
    for (i, (blob, _)) in blobs.iter().enumerate() {
        let p = t.path().join(format!("blob{i}"));
        std::fs::write(&p, blob).unwrap();
        paths.push(p);
    }
    let layers: Vec<(&Path, &str)> = paths
        .iter()
        .zip(&blobs)
        .map(|(p, (_, mt))| (p.as_path(), *mt))
        .collect();
    let stats = image_unpack::unpack(layers, &root, &opts()).unwrap();
    assert_eq!(stats.len(), 4);
    for (s, tar) in stats.iter().zip(&tars) {
        assert_eq!(s.diff_id.hex(), sha256_hex(tar));
    }
    for (name, content) in [("one", "1"), ("two", "2"), ("three", "3"), ("four", "4")] {
        assert_eq!(read(&root.join(name)), content);
    }

    // A broken blob reports its index.
    let bad = t.path().join("bad");
    std::fs::write(
        &bad,
        gzip(b"this is not a tar archive, not at all, no headers here"),
    )
    .unwrap();
    let ok = paths[0].as_path();
    let err = image_unpack::unpack(
        [
            (ok, "application/vnd.oci.image.layer.v1.tar"),
            (bad.as_path(), "x"),
        ],
        &root,
        &opts(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Layer { index: 1, .. }), "{err}");
    let missing = t.path().join("missing");
    let err = image_unpack::unpack([(missing.as_path(), "x")], &root, &opts()).unwrap_err();
    assert!(
        matches!(err.root_cause(), UnpackError::Blob { .. }),
        "{err}"
    );
}

#[test]
fn whiteout_deletes_a_file_and_a_tree() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let l1 = Layer::new()
        .dir("a", 0o755)
        .file("a/gone", b"x", 0o644)
        .file("a/kept", b"x", 0o644)
        .dir("tree", 0o755)
        .dir("tree/sub", 0o755)
        .file("tree/sub/deep", b"x", 0o644)
        .symlink("tree/link", "/")
        .file("other", b"x", 0o644)
        .tar();
    apply(root, &l1, Compression::None).unwrap();
    let l2 = Layer::new()
        .file("a/.wh.gone", b"", 0o644)
        .file(".wh.tree", b"", 0o644)
        .file(".wh.never-existed", b"", 0o644)
        .file("missing-dir/.wh.x", b"", 0o644)
        .file("a/.wh..wh.aufs-meta", b"", 0o644)
        .tar();
    apply(root, &l2, Compression::Gzip).unwrap();
    assert!(!root.join("a/gone").exists());
    assert!(root.join("a/kept").exists());
    assert!(std::fs::symlink_metadata(root.join("tree")).is_err());
    assert!(root.join("other").exists());
    // Whiteout files are never created, nor their directories.
    assert!(std::fs::symlink_metadata(root.join("a/.wh.gone")).is_err());
    assert!(std::fs::symlink_metadata(root.join(".wh.tree")).is_err());
    assert!(std::fs::symlink_metadata(root.join("a/.wh..wh.aufs-meta")).is_err());
    assert!(!root.join("missing-dir").exists());
}

#[test]
fn opaque_dir_keeps_same_layer_entries_in_any_order() {
    for marker_first in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let l1 = Layer::new()
            .dir("o", 0o755)
            .file("o/lower", b"x", 0o644)
            .dir("o/lowerdir", 0o755)
            .file("o/lowerdir/f", b"x", 0o644)
            .dir("o/shared", 0o755)
            .file("o/shared/lowerfile", b"x", 0o644)
            .file("o/replaced", b"lower", 0o644)
            .file("sibling", b"x", 0o644)
            .tar();
        apply(root, &l1, Compression::None).unwrap();
        let mut l2 = Layer::new().dir("o", 0o711);
        if marker_first {
            l2 = l2.file("o/.wh..wh..opq", b"", 0o644);
        }
        l2 = l2
            .file("o/new", b"new", 0o644)
            .dir("o/shared", 0o755)
            .file("o/shared/newfile", b"new", 0o644)
            .file("o/replaced", b"upper", 0o644)
            .file("o/implicit/parent/file", b"new", 0o644);
        if !marker_first {
            l2 = l2.file("o/.wh..wh..opq", b"", 0o644);
        }
        l2 = l2.file("o/after", b"after", 0o644);
        apply(root, &l2.tar(), Compression::Zstd).unwrap();
        let o = root.join("o");
        let mut names: Vec<String> = std::fs::read_dir(&o)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["after", "implicit", "new", "replaced", "shared"],
            "marker_first={marker_first}"
        );
        assert_eq!(read(&o.join("replaced")), "upper");
        let shared: Vec<_> = std::fs::read_dir(o.join("shared")).unwrap().collect();
        assert_eq!(
            shared.len(),
            1,
            "lower files in a re-declared dir are dropped"
        );
        assert!(o.join("shared/newfile").exists());
        assert!(o.join("implicit/parent/file").exists());
        assert_eq!(mode(&o), 0o711);
        assert!(root.join("sibling").exists());
    }
}

#[test]
fn whiteout_only_hides_lower_layers() {
    // The spec: a whiteout applies to lower layers, not to entries of its own layer.
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    apply(
        root,
        &Layer::new()
            .dir("d", 0o755)
            .file("d/lower", b"x", 0o644)
            .tar(),
        Compression::None,
    )
    .unwrap();
    let l2 = Layer::new()
        .file("f", b"same layer", 0o644)
        .file(".wh.f", b"", 0o644)
        .file("d/upper", b"same layer", 0o644)
        .file(".wh.d", b"", 0o644)
        .tar();
    apply(root, &l2, Compression::None).unwrap();
    assert_eq!(read(&root.join("f")), "same layer");
    assert!(root.join("d/upper").exists());
    assert!(!root.join("d/lower").exists());
}

#[test]
fn entries_replace_paths_of_another_type() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let target = t.path().join("..").join("never-written-through");
    let l1 = Layer::new()
        .file("file-to-dir", b"x", 0o644)
        .dir("dir-to-file", 0o755)
        .dir("dir-to-file/sub", 0o755)
        .file("dir-to-file/sub/f", b"x", 0o644)
        .dir("realdir", 0o755)
        .symlink("link-to-dir", "realdir")
        .file("file-to-link", b"x", 0o644)
        .dir("keep", 0o755)
        .file("keep/child", b"child", 0o644)
        .node("fifo-to-file", EntryType::Fifo, 0, 0, 0o644)
        .tar();
    apply(root, &l1, Compression::None).unwrap();
    assert!(
        std::fs::symlink_metadata(root.join("fifo-to-file"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let l2 = Layer::new()
        .dir("file-to-dir", 0o700)
        .file("file-to-dir/inside", b"in", 0o644)
        .file("dir-to-file", b"now a file", 0o644)
        .dir("link-to-dir", 0o755)
        .file("link-to-dir/new", b"in the new dir", 0o644)
        .symlink("file-to-link", target.to_str().unwrap())
        .dir("keep", 0o700)
        .file("fifo-to-file", b"plain", 0o644)
        .tar();
    apply(root, &l2, Compression::Gzip).unwrap();
    assert!(root.join("file-to-dir").is_dir());
    assert_eq!(mode(&root.join("file-to-dir")), 0o700);
    assert_eq!(read(&root.join("file-to-dir/inside")), "in");
    assert_eq!(read(&root.join("dir-to-file")), "now a file");
    let m = std::fs::symlink_metadata(root.join("link-to-dir")).unwrap();
    assert!(m.is_dir(), "the symlink was replaced by a directory");
    assert!(
        !root.join("realdir/new").exists(),
        "nothing went through the old symlink"
    );
    assert_eq!(read(&root.join("link-to-dir/new")), "in the new dir");
    assert_eq!(
        std::fs::read_link(root.join("file-to-link")).unwrap(),
        target
    );
    assert_eq!(read(&root.join("keep/child")), "child");
    assert_eq!(mode(&root.join("keep")), 0o700);
    assert_eq!(read(&root.join("fifo-to-file")), "plain");
}

#[test]
fn long_names_and_pax_records() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let long_dir = "d".repeat(120);
    let long_path = format!("{long_dir}/{}", "f".repeat(150));
    let long_target = format!("{}/{}", "../".repeat(3), "t".repeat(180));
    let pax_path = format!("{}/pax-named", "p".repeat(140));
    let l = Layer::new()
        .file(&long_path, b"gnu long name", 0o644)
        .symlink("long-link", &long_target)
        .pax(&[
            ("path", pax_path.as_bytes()),
            ("mtime", b"1700000000.123456789"),
            ("uid", b"0"),
        ])
        .file("short-placeholder", b"pax named", 0o644)
        .pax(&[("path", "ünïcödé name\nwith newline".as_bytes())])
        .file("other-placeholder", b"odd name", 0o644)
        .tar();
    apply(root, &l, Compression::Gzip).unwrap();
    assert_eq!(read(&root.join(&long_path)), "gnu long name");
    assert_eq!(
        std::fs::read_link(root.join("long-link"))
            .unwrap()
            .to_str()
            .unwrap(),
        long_target
    );
    let p = root.join(&pax_path);
    assert_eq!(read(&p), "pax named");
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 123_456_789));
    assert!(!root.join("short-placeholder").exists());
    assert_eq!(read(&root.join("ünïcödé name\nwith newline")), "odd name");
}

#[test]
fn xattrs_are_set_when_enabled() {
    let t = tempfile::Builder::new().tempdir_in("/var/tmp").unwrap();
    let value = b"binary\nvalue\0with nul";
    let l = Layer::new()
        .pax(&[
            ("SCHILY.xattr.user.test", value),
            ("SCHILY.xattr.user.other", b"2"),
        ])
        .file("f", b"x", 0o644)
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir("d", 0o755)
        .pax(&[("SCHILY.xattr.security.bogus-for-test", b"x")])
        .file("g", b"x", 0o644)
        .tar();
    let on = t.path().join("on");
    std::fs::create_dir(&on).unwrap();
    apply(&on, &l, Compression::None).unwrap();
    let get = |p: &Path, name: &str| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        match rustix::fs::getxattr(p, name, &mut buf[..]) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    };
    assert_eq!(get(&on.join("f"), "user.test").as_deref(), Some(&value[..]));
    assert_eq!(get(&on.join("f"), "user.other").as_deref(), Some(&b"2"[..]));
    assert_eq!(get(&on.join("d"), "user.dir").as_deref(), Some(&b"d"[..]));
    assert!(
        on.join("g").exists(),
        "refused security.* xattrs are ignored"
    );

    let off = t.path().join("off");
    std::fs::create_dir(&off).unwrap();
    let o = UnpackOptions {
        xattrs: false,
        ..opts()
    };
    apply_with(&off, &l, Compression::None, &o).unwrap();
    assert_eq!(get(&off.join("f"), "user.test"), None);
}

#[test]
fn ownership_when_root() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let l = Layer::new()
        .dir_with("home", 0o755, MTIME, 1000, 1000)
        .file_with("home/suid", b"x", 0o4750, MTIME, 1234, 5678)
        .symlink_owned("home/link", "/nowhere", 4321, 8765)
        .pax(&[("uid", b"3000000"), ("gid", b"3000001")])
        .file("home/big-ids", b"x", 0o644)
        .tar();
    apply(root, &l, Compression::Gzip).unwrap();
    let m = std::fs::metadata(root.join("home/suid")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.mode() & 0o7777, 0o4750, "setuid survives chown");
    let m = std::fs::symlink_metadata(root.join("home/link")).unwrap();
    assert_eq!((m.uid(), m.gid()), (4321, 8765));
    let m = std::fs::metadata(root.join("home")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    let m = std::fs::metadata(root.join("home/big-ids")).unwrap();
    assert_eq!((m.uid(), m.gid()), (3_000_000, 3_000_001));

    // Without same_owner, files belong to whoever unpacks.
    let t2 = tempfile::tempdir().unwrap();
    let o = UnpackOptions {
        same_owner: false,
        ..opts()
    };
    apply_with(t2.path(), &l, Compression::Gzip, &o).unwrap();
    let m = std::fs::metadata(t2.path().join("home/suid")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));
}

#[test]
fn device_nodes_when_root() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let l = Layer::new()
        .dir("dev", 0o755)
        .node("dev/null", EntryType::Char, 1, 3, 0o666)
        .node("dev/fifo", EntryType::Fifo, 0, 0, 0o620)
        .tar();
    let t = tempfile::tempdir().unwrap();
    apply(t.path(), &l, Compression::None).unwrap();
    let m = std::fs::symlink_metadata(t.path().join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(m.mode() & 0o7777, 0o666);
    assert_eq!(m.mtime(), MTIME as i64);
    let m = std::fs::symlink_metadata(t.path().join("dev/fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o620);

    let t = tempfile::tempdir().unwrap();
    let o = UnpackOptions {
        devices: false,
        ..opts()
    };
    apply_with(t.path(), &l, Compression::None, &o).unwrap();
    assert!(std::fs::symlink_metadata(t.path().join("dev/null")).is_err());
    assert!(
        std::fs::symlink_metadata(t.path().join("dev/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn root_entry_updates_root_metadata() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    std::fs::create_dir(&root).unwrap();
    let l = Layer::new().dir("./", 0o751).file("./a", b"a", 0o644).tar();
    apply(&root, &l, Compression::None).unwrap();
    assert_eq!(mode(&root), 0o751);
    assert_eq!(mtime(&root), MTIME as i64);
    let err = apply(
        &root,
        &Layer::new().raw(b"./", EntryType::Regular, b"", b"x").tar(),
        Compression::None,
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::InvalidName { .. }), "{err}");
}

#[test]
fn hard_link_to_a_missing_target_fails() {
    let t = tempfile::tempdir().unwrap();
    let err = apply(
        t.path(),
        &Layer::new().hardlink("a", "nothing-here").tar(),
        Compression::None,
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::HardLink { .. }), "{err}");
    let l = Layer::new().dir("d", 0o755).hardlink("a", "d").tar();
    let err = apply(t.path(), &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::HardLink { .. }), "{err}");
}

#[test]
fn absurd_names_are_refused() {
    let t = tempfile::tempdir().unwrap();
    // A 5000-byte PAX path passes the header limits but not the name limit.
    let l = Layer::new()
        .pax(&[("path", "n".repeat(5000).as_bytes())])
        .file("x", b"", 0o644)
        .tar();
    let err = apply(t.path(), &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::InvalidName { .. }), "{err}");
    // 4096 bytes is still fine.
    let ok_name = format!("{}/{}", "a".repeat(200), "b".repeat(4096 - 201));
    let l = Layer::new()
        .pax(&[("path", ok_name.as_bytes())])
        .file("x", b"ok", 0o644)
        .tar();
    let err = apply(t.path(), &l, Compression::None).unwrap_err();
    // ...as far as this crate goes: a 3895-byte component is over the kernel's NAME_MAX.
    assert!(matches!(err, UnpackError::Fs { .. }), "{err}");
    // Too deep.
    let deep = "d/".repeat(300) + "f";
    let err = apply(
        t.path(),
        &Layer::new().file(&deep, b"", 0o644).tar(),
        Compression::None,
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::InvalidName { .. }), "{err}");
    let fine = "d/".repeat(200) + "f";
    apply(
        t.path(),
        &Layer::new().file(&fine, b"deep", 0o644).tar(),
        Compression::None,
    )
    .unwrap();
    assert_eq!(read(&t.path().join(&fine)), "deep");
    // A GNU long name over the limit is refused before it is read.
    let err = apply(
        t.path(),
        &Layer::new().file(&"g".repeat(4200), b"", 0o644).tar(),
        Compression::Gzip,
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::LimitExceeded { .. }), "{err}");
}

#[test]
fn huge_extension_headers_are_refused_before_buffering() {
    for kind in [EntryType::GNULongName, EntryType::XHeader] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(1 << 40);
        h.set_path("././@LongLink").unwrap();
        h.set_cksum();
        // Only a little real data follows: without the guard, the tar crate would try to read
        // the whole claimed size into memory.
        let l = Layer::new().raw_header(&h, &[b'a'; 4096]).tar();
        let t = tempfile::tempdir().unwrap();
        let err = apply(t.path(), &l, Compression::Zstd).unwrap_err();
        match err {
            UnpackError::LimitExceeded { size, .. } => assert_eq!(size, 1 << 40),
            other => panic!("{kind:?}: {other}"),
        }
    }
}

#[test]
fn ambiguous_pax_size_is_refused() {
    // The tar crate reads PAX records line by line: a newline inside a value hides the `size`
    // record from it, while a POSIX reader sees it. Such an archive means two things: refuse it.
    let l = Layer::new()
        .pax(&[("SCHILY.xattr.user.x", b"a\nb"), ("size", b"3")])
        .file("f", b"abc", 0o644)
        .tar();
    let t = tempfile::tempdir().unwrap();
    let err = apply(t.path(), &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::Malformed(_)), "{err}");
    assert!(!t.path().join("f").exists());
}

#[test]
fn empty_and_garbage_streams() {
    let t = tempfile::tempdir().unwrap();
    let empty = Layer::new().tar();
    assert_eq!(empty.len(), 1024);
    let s = apply(t.path(), &empty, Compression::Gzip).unwrap();
    assert_eq!((s.entries, s.bytes), (0, 1024));
    assert_eq!(s.diff_id.hex(), sha256_hex(&empty));
    let s = apply(t.path(), b"", Compression::None).unwrap();
    assert_eq!(s.entries, 0);
    assert_eq!(s.diff_id, oci_core::Digest::sha256_of(b""));

    let garbage = vec![0x42u8; 2048];
    let err = apply(t.path(), &garbage, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err}");
    let err =
        image_unpack::apply_layer(&garbage[..], Compression::Gzip, t.path(), &opts()).unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err}");
    let err =
        image_unpack::apply_layer(&garbage[..], Compression::Zstd, t.path(), &opts()).unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err}");
    // Truncated in the middle of a file.
    let tar = Layer::new().file("big", &vec![1u8; 10_000], 0o644).tar();
    let err = apply(t.path(), &tar[..3000], Compression::Gzip).unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err}");
    let missing = t.path().join("nope");
    let err = apply(&missing, &empty, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::Root { .. }), "{err}");
}

#[test]
fn unsupported_entry_types_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let l = Layer::new()
        .raw(b"volume", EntryType::new(b'V'), b"", b"")
        .tar();
    let err = apply(t.path(), &l, Compression::None).unwrap_err();
    assert!(
        matches!(err, UnpackError::UnsupportedEntry { kind: 'V', .. }),
        "{err}"
    );
}

#[test]
fn opaque_root_keeps_dirs_holding_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let l1 = Layer::new()
        .dir("p", 0o755)
        .file("p/x", b"x", 0o644)
        .file("p/y", b"y", 0o644)
        .file("q", b"q", 0o644)
        .tar();
    apply(root, &l1, Compression::None).unwrap();
    let l2 = Layer::new()
        .file("p/.wh.x", b"", 0o644)
        .file(".wh..wh..opq", b"", 0o644)
        .tar();
    apply(root, &l2, Compression::None).unwrap();
    assert!(
        root.join("p").is_dir(),
        "the whiteout's directory is part of this layer"
    );
    assert!(!root.join("p/x").exists());
    assert!(
        !root.join("p/y").exists(),
        "lower content under an opaque root is gone"
    );
    assert!(!root.join("q").exists());
}
