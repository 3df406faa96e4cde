//! Expectations ported from containerd/stargz-snapshotter `estargz/testutil.go`
//! (`testWriteAndOpen`), run over the same inputs, name prefixes and tar formats.
//!
//! Go's cases drive the bare `Writer` (no landmark); our `build` is Go's `Build`, which
//! adds `.no.prefetch.landmark` first. The landmark's header opens the first member and
//! its payload opens a second one that then carries what Go's first member carried, so
//! every gzip-member count below is Go's `wantNumGz` + 1 (+ 2 for the empty tar, where
//! Go has no first member at all), and every TOC entry count is Go's + 1.

mod common;

use common::*;
use estargz::*;
use oci_core::Digest;
use tar::EntryType;

const CONTENT: &[u8] = b"Some contents";
const PREFIXES: [&str; 4] = ["", "./", "/", "../"];
const FORMATS: [Format; 3] = [Format::Ustar, Format::Pax, Format::Gnu];

struct Case {
    name: &'static str,
    chunk_size: u64,
    make: fn(&mut TarMaker),
    go_num_gz: usize,
    check: fn(&Toc, &[u8]),
}

fn built(c: &Case, format: Format, prefix: &str) -> (Toc, Vec<u8>) {
    let mut t = TarMaker::new(format, prefix);
    (c.make)(&mut t);
    let input = t.finish();
    let o = WriterOptions {
        chunk_size: c.chunk_size,
        compression_level: 9,
        ..Default::default()
    };
    let (blob, b) = build_blob(&input, &o);
    let (toc, _) = read_toc(&blob, Some(&b.toc_digest)).unwrap();
    verify(&blob, &b.toc_digest).unwrap();
    (toc, blob)
}

fn num_toc_entries(toc: &Toc, n: usize) {
    // Go's numTOCEntries counts every entry, chunks included; + 1 for the landmark.
    assert_eq!(toc.entries.len(), n + 1, "{:#?}", toc.entries);
}

fn has_file_contents_range(toc: &Toc, blob: &[u8], name: &str, offset: usize, want: &[u8]) {
    let mut data = Vec::new();
    for c in toc.chunks_of(name).unwrap() {
        data.extend(read_chunk(&blob.to_vec(), &c).unwrap());
    }
    assert_eq!(&data[offset..], want, "{name}@{offset}");
}

fn chunk_entries(toc: &Toc, name: &str) -> usize {
    toc.chunks_of(name).unwrap().len()
}

fn link_count(toc: &Toc, name: &str) -> u64 {
    toc.entry(name).unwrap().num_link
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "empty",
            chunk_size: 4 << 20,
            make: |_| {},
            go_num_gz: 2,
            check: |toc, _| num_toc_entries(toc, 0),
        },
        Case {
            name: "1dir_1empty_file",
            chunk_size: 4 << 20,
            make: |t| {
                t.dir("foo/", 0o755).file("foo/bar.txt", b"");
            },
            go_num_gz: 3,
            check: |toc, _| {
                num_toc_entries(toc, 2);
                assert_eq!(toc.entry("foo").unwrap().kind, EntryKind::Dir);
                let f = toc.entry("foo/bar.txt").unwrap();
                assert_eq!(f.size, 0);
                assert_eq!(f.digest, Some(Digest::sha256_of(b"")));
            },
        },
        Case {
            name: "1dir_1file",
            chunk_size: 4 << 20,
            make: |t| {
                t.dir("foo/", 0o755).file_with(
                    "foo/bar.txt",
                    CONTENT,
                    0o644,
                    &[("foo", b"bar"), ("invalid-utf8", b"\xff\xfe\xfd")],
                );
            },
            go_num_gz: 4,
            check: |toc, blob| {
                num_toc_entries(toc, 2);
                let f = toc.entry("foo/bar.txt").unwrap();
                assert_eq!(f.size, CONTENT.len() as u64);
                assert_eq!(f.digest, Some(Digest::sha256_of(CONTENT)));
                assert_eq!(f.xattrs["foo"], b"bar");
                assert_eq!(f.xattrs["invalid-utf8"], b"\xff\xfe\xfd");
                has_file_contents_range(toc, blob, "foo/bar.txt", 0, CONTENT);
                has_file_contents_range(toc, blob, "foo/bar.txt", 1, &CONTENT[1..]);
            },
        },
        Case {
            name: "2meta_2file",
            chunk_size: 4 << 20,
            make: |t| {
                t.dir("bar/", 0o755).dir("foo/", 0o755).owned_file(
                    "foo/bar.txt",
                    CONTENT,
                    50,
                    100,
                    "",
                );
            },
            go_num_gz: 4,
            check: |toc, _| {
                num_toc_entries(toc, 3);
                assert_eq!(chunk_entries(toc, "foo/bar.txt"), 1);
                let f = toc.entry("foo/bar.txt").unwrap();
                assert_eq!((f.uid, f.gid), (50, 100));
            },
        },
        Case {
            name: "3dir",
            chunk_size: 4 << 20,
            make: |t| {
                t.dir("bar/", 0o755)
                    .dir("foo/", 0o755)
                    .dir("foo/bar/", 0o755);
            },
            go_num_gz: 3,
            check: |toc, _| {
                assert_eq!(link_count(toc, "bar/"), 2);
                assert_eq!(link_count(toc, "foo/"), 3);
                assert_eq!(link_count(toc, "foo/bar/"), 2);
            },
        },
        Case {
            name: "symlink",
            chunk_size: 4 << 20,
            make: |t| {
                t.dir("foo/", 0o755).symlink("foo/bar", "../../x");
            },
            go_num_gz: 3,
            check: |toc, _| {
                num_toc_entries(toc, 2);
                let l = toc.entry("foo/bar").unwrap();
                assert_eq!(
                    (l.kind.clone(), l.link_name.as_str()),
                    (EntryKind::Symlink, "../../x")
                );
            },
        },
        Case {
            name: "chunked_file",
            chunk_size: 4,
            make: |t| {
                t.dir("foo/", 0o755)
                    .file("foo/big.txt", b"This is such a big file");
            },
            go_num_gz: 9,
            check: |toc, blob| {
                const BIG: &[u8] = b"This is such a big file";
                num_toc_entries(toc, 7);
                assert_eq!(chunk_entries(toc, "foo/big.txt"), 6);
                assert_eq!(
                    toc.entry("foo/big.txt").unwrap().digest,
                    Some(Digest::sha256_of(BIG))
                );
                for off in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, BIG.len() - 1] {
                    has_file_contents_range(toc, blob, "foo/big.txt", off, &BIG[off..]);
                }
            },
        },
        Case {
            name: "recursive",
            chunk_size: 4 << 20,
            make: |t| {
                let prefix = std::mem::take(&mut t.prefix);
                t.dir(&format!("{prefix}/"), 0o755);
                t.prefix = prefix;
                t.dir("bar/", 0o755)
                    .dir("foo/", 0o755)
                    .file("foo/bar.txt", CONTENT);
            },
            go_num_gz: 4,
            check: |toc, _| {
                // maxDepth(2): every name is at most two levels deep.
                assert!(
                    toc.entries
                        .iter()
                        .all(|e| clean_entry_name(&e.name).split('/').count() <= 2)
                );
                assert_eq!(toc.entry("").unwrap().kind, EntryKind::Dir);
            },
        },
        Case {
            name: "block_char_fifo",
            chunk_size: 4 << 20,
            make: |t| {
                t.device("b", EntryType::Block, 123, 456)
                    .device("c", EntryType::Char, 111, 222)
                    .device("f", EntryType::Fifo, 0, 0);
            },
            go_num_gz: 3,
            check: |toc, _| {
                let b = toc.entry("b").unwrap();
                assert_eq!(
                    (b.kind.clone(), b.dev_major, b.dev_minor, b.num_link),
                    (EntryKind::Block, 123, 456, 1)
                );
                let c = toc.entry("c").unwrap();
                assert_eq!(
                    (c.kind.clone(), c.dev_major, c.dev_minor, c.num_link),
                    (EntryKind::Char, 111, 222, 1)
                );
                let f = toc.entry("f").unwrap();
                assert_eq!((f.kind.clone(), f.num_link), (EntryKind::Fifo, 1));
            },
        },
        Case {
            name: "modes",
            chunk_size: 4 << 20,
            make: |t| {
                t.dir("foo1/", 0o42755)
                    .file_with("foo1/bar1", CONTENT, 0o4700, &[])
                    .file_with("foo1/bar2", CONTENT, 0o2755, &[])
                    .dir("foo2/", 0o41755)
                    .file_with("foo2/bar3", CONTENT, 0o1755, &[])
                    .dir("foo3/", 0o40755)
                    .file_with("foo3/bar4", CONTENT, 0o700, &[])
                    .file_with("foo3/bar5", CONTENT, 0o755, &[]);
            },
            go_num_gz: 8,
            check: |toc, _| {
                for (name, mode) in [
                    ("foo1/", 0o42755),
                    ("foo1/bar1", 0o4700),
                    ("foo1/bar2", 0o2755),
                    ("foo2/", 0o41755),
                    ("foo2/bar3", 0o1755),
                    ("foo3/", 0o40755),
                    ("foo3/bar4", 0o700),
                    ("foo3/bar5", 0o755),
                ] {
                    assert_eq!(toc.entry(name).unwrap().mode, mode, "{name}");
                }
            },
        },
        Case {
            name: "lossy",
            chunk_size: 4 << 20,
            make: |t| {
                t.dir("bar/", 0o755)
                    .dir("foo/", 0o755)
                    .owned_file("foo/bar.txt", CONTENT, 50, 100, "")
                    .file(TOC_TAR_NAME, b"dummy");
            },
            go_num_gz: 4,
            check: |toc, _| {
                num_toc_entries(toc, 3);
                assert_eq!(chunk_entries(toc, "foo/bar.txt"), 1);
            },
        },
        Case {
            name: "hardlink should be replaced to the destination entry",
            chunk_size: 4 << 20,
            make: |t| {
                t.dir("foo/", 0o755)
                    .file("foo/foo1", b"test")
                    .hardlink("foolink", "foo/foo1");
            },
            go_num_gz: 4,
            check: |toc, _| {
                // mustSameEntry: the link resolves to the file, which has two names.
                assert_eq!(toc.lookup("foolink"), toc.entry("foo/foo1"));
                assert_eq!(
                    toc.chunks_of("foolink").unwrap(),
                    toc.chunks_of("foo/foo1").unwrap()
                );
                assert_eq!(link_count(toc, "foo/foo1"), 2);
            },
        },
    ]
}

#[test]
fn write_and_open_like_go() {
    for c in cases() {
        for format in FORMATS {
            for prefix in PREFIXES {
                // Long-name helpers are not involved; `../` only works with PAX paths and
                // plain header names, which TarMaker writes verbatim.
                let (toc, blob) = built(&c, format, prefix);
                let want = c.go_num_gz + if c.name == "empty" { 2 } else { 1 };
                assert_eq!(
                    member_starts(&blob).len(),
                    want,
                    "{} {format:?} {prefix:?}",
                    c.name
                );
                (c.check)(&toc, &blob);
            }
        }
    }
}
