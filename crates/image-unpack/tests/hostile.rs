//! Hostile archives: each test applies one and checks that nothing outside the root changed.
//!
//! `Sandbox` makes `TMP/root` (where layers are applied) and `TMP/outside` (a sentinel tree
//! with a file, a nested dir, a symlink, fixed modes and times); `check()` compares a snapshot
//! of everything in `TMP` except `root/` (types, modes, owners, link counts, times, contents).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use image_unpack::{Compression, UnpackError, UnpackOptions};
use tar::EntryType;

fn abs(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn dotdot_names_are_refused() {
    let s = Sandbox::new();
    for name in [
        &b"../escape"[..],
        b"../outside/file",
        b"a/../../escape",
        b"/../escape",
        b"./../../outside/dir/sub/deep",
    ] {
        for kind in [EntryType::Regular, EntryType::Directory, EntryType::Symlink] {
            let l = Layer::new().raw(name, kind, b"target", b"pwned").tar();
            let err = apply(&s.root, &l, Compression::None).unwrap_err();
            assert!(
                matches!(err, UnpackError::Breakout { .. }),
                "{}: {err}",
                String::from_utf8_lossy(name)
            );
        }
    }
    assert!(!s.dir.path().join("escape").exists());
    s.check();
}

#[test]
fn absolute_names_land_inside_the_root() {
    let s = Sandbox::new();
    let outside_file = s.outside.join("file");
    let name = outside_file.to_str().unwrap().as_bytes().to_vec();
    assert!(name.len() <= 100);
    let l = Layer::new()
        .raw(b"/abs/path", EntryType::Regular, b"", b"contained")
        .raw(&name, EntryType::Regular, b"", b"pwned")
        .tar();
    apply(&s.root, &l, Compression::Gzip).unwrap();
    assert_eq!(read(&s.root.join("abs/path")), "contained");
    assert_eq!(read(&s.outside_in_root().join("file")), "pwned");
    assert!(!Path::new("/abs").exists());
    s.check();
}

#[test]
fn absolute_symlink_then_write_through_it() {
    let s = Sandbox::new();
    let l = Layer::new()
        .symlink("evil", abs(&s.outside))
        .file("evil/file", b"pwned", 0o777)
        .file("evil/new", b"pwned", 0o644)
        .dir("evil/dir", 0o700)
        .file("evil/dir/sub/deep", b"pwned", 0o644)
        .symlink("evil/link", "/etc/shadow")
        .tar();
    apply(&s.root, &l, Compression::Zstd).unwrap();
    // The symlink exists as written...
    assert_eq!(std::fs::read_link(s.root.join("evil")).unwrap(), s.outside);
    // ...and what went "through" it stayed in the root.
    let inside = s.outside_in_root();
    assert_eq!(read(&inside.join("file")), "pwned");
    assert_eq!(read(&inside.join("dir/sub/deep")), "pwned");
    s.check();
}

#[test]
fn dotdot_symlink_then_write_through_it() {
    let s = Sandbox::new();
    let l = Layer::new()
        .symlink("up", "../../")
        .file("up/escaped", b"pwned", 0o644)
        .file("up/outside/file", b"pwned", 0o644)
        .dir("a", 0o755)
        .dir("a/b", 0o755)
        .symlink("a/b/way-up", "../../../../../../..")
        .file("a/b/way-up/outside/dir/sub/deep", b"pwned", 0o644)
        .symlink("a/b/rel", "../../up/outside")
        .file("a/b/rel/link", b"pwned", 0o644)
        .tar();
    apply(&s.root, &l, Compression::None).unwrap();
    assert_eq!(read(&s.root.join("escaped")), "pwned");
    assert_eq!(read(&s.root.join("outside/file")), "pwned");
    assert_eq!(read(&s.root.join("outside/dir/sub/deep")), "pwned");
    assert_eq!(read(&s.root.join("outside/link")), "pwned");
    assert!(!s.dir.path().join("escaped").exists());
    s.check();
}

#[test]
fn symlink_in_a_lower_layer_then_write_through_it() {
    let s = Sandbox::new();
    let l1 = Layer::new()
        .dir("d", 0o755)
        .symlink("d/evil", abs(&s.outside))
        .tar();
    apply(&s.root, &l1, Compression::None).unwrap();
    let l2 = Layer::new()
        .dir("d/evil", 0o777)
        .file("d/evil/file", b"pwned", 0o644)
        .tar();
    apply(&s.root, &l2, Compression::Gzip).unwrap();
    // The directory entry replaced the symlink instead of chmod'ing its target.
    assert!(
        std::fs::symlink_metadata(s.root.join("d/evil"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(read(&s.root.join("d/evil/file")), "pwned");
    let l3 = Layer::new().symlink("d/evil2", "../../outside").tar();
    apply(&s.root, &l3, Compression::None).unwrap();
    let l4 = Layer::new().file("d/evil2/file", b"pwned", 0o644).tar();
    apply(&s.root, &l4, Compression::None).unwrap();
    assert_eq!(read(&s.root.join("outside/file")), "pwned");
    s.check();
}

#[test]
fn entries_over_symlinks_replace_them_instead_of_following() {
    let s = Sandbox::new();
    let l1 = Layer::new()
        .symlink("f", abs(&s.outside.join("file")))
        .symlink("d", abs(&s.outside.join("dir")))
        .symlink("n", abs(&s.outside.join("file")))
        .symlink("h", abs(&s.outside.join("file")))
        .tar();
    apply(&s.root, &l1, Compression::None).unwrap();
    let l2 = Layer::new()
        .file_with("f", b"pwned", 0o777, 0, 0, 0)
        .dir_with("d", 0o777, 0, 0, 0)
        .node("n", EntryType::Fifo, 0, 0, 0o777)
        .file("target", b"t", 0o644)
        .hardlink("h", "target")
        .tar();
    apply(&s.root, &l2, Compression::None).unwrap();
    assert_eq!(read(&s.root.join("f")), "pwned");
    assert!(
        std::fs::symlink_metadata(s.root.join("d"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(read(&s.root.join("h")), "t");
    s.check();
}

#[test]
fn symlink_metadata_never_touches_its_target() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let s = Sandbox::new();
    let l = Layer::new()
        .symlink_owned("s", abs(&s.outside.join("file")), 4242, 4242)
        .pax(&[
            ("SCHILY.xattr.user.pwn", b"x"),
            ("SCHILY.xattr.trusted.pwn", b"x"),
        ])
        .symlink_owned("s2", abs(&s.outside.join("dir")), 4242, 4242)
        .hardlink("hl", "s")
        .tar();
    apply(&s.root, &l, Compression::None).unwrap();
    let m = std::fs::symlink_metadata(s.root.join("s")).unwrap();
    assert_eq!(m.uid(), 4242);
    // A hard link to a symlink links the symlink itself.
    let h = std::fs::symlink_metadata(s.root.join("hl")).unwrap();
    assert_eq!(h.ino(), m.ino());
    let mut buf = [0u8; 16];
    assert!(rustix::fs::getxattr(s.outside.join("dir"), "user.pwn", &mut buf[..]).is_err());
    s.check();
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let s = Sandbox::new();
    for target in [
        &b"../../outside/file"[..],
        b"../outside/file",
        b"a/../../outside/file",
    ] {
        let l = Layer::new()
            .raw(b"link", EntryType::Link, target, b"")
            .tar();
        let err = apply(&s.root, &l, Compression::None).unwrap_err();
        assert!(matches!(err, UnpackError::Breakout { .. }), "{err}");
    }
    // Through a symlink: resolved inside the root, where there is nothing to link.
    let l = Layer::new()
        .symlink("evil", abs(&s.outside))
        .hardlink("link", "evil/file")
        .tar();
    let err = apply(&s.root, &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::HardLink { .. }), "{err}");
    let l = Layer::new()
        .symlink("up", "../..")
        .hardlink("link2", "up/outside/file")
        .tar();
    let err = apply(&s.root, &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::HardLink { .. }), "{err}");
    // An absolute target is an archive path, i.e. inside the root.
    let l = Layer::new()
        .raw(
            b"link3",
            EntryType::Link,
            abs(&s.outside.join("file")).as_bytes(),
            b"",
        )
        .tar();
    let err = apply(&s.root, &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::HardLink { .. }), "{err}");
    assert_eq!(
        std::fs::metadata(s.outside.join("file")).unwrap().nlink(),
        1
    );
    assert!(std::fs::symlink_metadata(s.root.join("link")).is_err());
    s.check();
}

#[test]
fn whiteouts_of_dotdot_are_refused_or_contained() {
    let s = Sandbox::new();
    for name in [
        &b"../.wh.outside"[..],
        b"a/../../.wh.outside",
        b"/../.wh.outside",
    ] {
        let l = Layer::new().raw(name, EntryType::Regular, b"", b"").tar();
        let err = apply(&s.root, &l, Compression::None).unwrap_err();
        assert!(matches!(err, UnpackError::Breakout { .. }), "{err}");
    }
    // `.wh...` would name the parent directory itself.
    apply(
        &s.root,
        &Layer::new().dir("a", 0o755).tar(),
        Compression::None,
    )
    .unwrap();
    for name in [&b"a/.wh..."[..], b".wh...", b"a/.wh..", b".wh."] {
        let l = Layer::new().raw(name, EntryType::Regular, b"", b"").tar();
        let err = apply(&s.root, &l, Compression::None).unwrap_err();
        assert!(matches!(err, UnpackError::InvalidName { .. }), "{err}");
    }
    assert!(s.root.join("a").is_dir());
    // Through symlinks, whiteouts resolve inside the root.
    let l = Layer::new()
        .symlink("up", "../..")
        .file("up/.wh.outside", b"", 0o644)
        .symlink("top", abs(s.dir.path()))
        .file("top/.wh.outside", b"", 0o644)
        .file("top/outside/.wh.file", b"", 0o644)
        .tar();
    apply(&s.root, &l, Compression::Gzip).unwrap();
    s.check();
}

#[test]
fn opaque_marker_in_a_symlinked_dir_is_contained() {
    let s = Sandbox::new();
    let l1 = Layer::new()
        .dir("lower", 0o755)
        .file("lower/kept-or-not", b"x", 0o644)
        .tar();
    apply(&s.root, &l1, Compression::None).unwrap();
    let l2 = Layer::new()
        .symlink("lnk", abs(&s.outside))
        .file("lnk/.wh..wh..opq", b"", 0o644)
        .symlink("lnk2", abs(&s.outside.join("dir")))
        .file("lnk2/.wh..wh..opq", b"", 0o644)
        .tar();
    apply(&s.root, &l2, Compression::Zstd).unwrap();
    assert!(s.root.join("lower/kept-or-not").exists());
    s.check();
    // A symlink to the root's parent resolves to the root itself: the opaque marker then
    // clears the root's lower content (inside the root), and nothing else.
    let l3 = Layer::new()
        .symlink("up", "../../..")
        .file("up/.wh..wh..opq", b"", 0o644)
        .tar();
    apply(&s.root, &l3, Compression::None).unwrap();
    assert!(!s.root.join("lower").exists());
    assert!(
        std::fs::symlink_metadata(s.root.join("up")).is_ok(),
        "same-layer entry kept"
    );
    s.check();
}

#[test]
fn device_nodes_are_skipped_when_not_allowed() {
    let s = Sandbox::new();
    let o = UnpackOptions {
        devices: false,
        ..opts()
    };
    let l = Layer::new()
        .node("dev/mem", EntryType::Char, 1, 1, 0o666)
        .node("dev/sda", EntryType::Block, 8, 0, 0o666)
        .tar();
    apply_with(&s.root, &l, Compression::None, &o).unwrap();
    assert!(std::fs::symlink_metadata(s.root.join("dev/mem")).is_err());
    assert!(std::fs::symlink_metadata(s.root.join("dev/sda")).is_err());
    let l = Layer::new().raw(b"../mem", EntryType::Char, b"", b"").tar();
    let err = apply_with(&s.root, &l, Compression::None, &o).unwrap_err();
    assert!(matches!(err, UnpackError::Breakout { .. }), "{err}");
    s.check();
}

#[test]
fn symlink_loops_fail_cleanly() {
    let s = Sandbox::new();
    let l = Layer::new()
        .symlink("loop1", "loop2")
        .symlink("loop2", "loop1")
        .file("loop1/file", b"x", 0o644)
        .tar();
    let err = apply(&s.root, &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::Fs { .. }), "{err}");
    let l = Layer::new()
        .file("plain", b"x", 0o644)
        .file("plain/under-a-file", b"x", 0o644)
        .tar();
    let err = apply(&s.root, &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::Fs { .. }), "{err}");
    s.check();
}

#[test]
fn pax_path_smuggling_cannot_escape() {
    // A PAX path record hidden in a binary value (the tar crate would read it) and a real one.
    let s = Sandbox::new();
    let l = Layer::new()
        .pax(&[
            ("SCHILY.xattr.user.x", b"v\n21 path=../../esc\n"),
            ("path", b"../../escape"),
        ])
        .file("placeholder", b"pwned", 0o644)
        .tar();
    let err = apply(&s.root, &l, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::Breakout { .. }), "{err}");
    assert!(!s.root.join("placeholder").exists());
    s.check();
}
