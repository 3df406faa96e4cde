//! Build blobs from synthetic tars and read them back through byte ranges.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};

use common::*;
use estargz::*;
use oci_core::Digest;
use tar::EntryType;

const CS: u64 = 4096;

fn opts(chunk_size: u64) -> WriterOptions {
    WriterOptions {
        chunk_size,
        compression_level: 6,
        ..Default::default()
    }
}

struct Sample {
    tar: Vec<u8>,
    /// (name as stored, content) of every regular file.
    files: Vec<(String, Vec<u8>)>,
}

fn long_name() -> String {
    format!("long/{}/file.txt", "d".repeat(120))
}

fn sample(format: Format, prefix: &str) -> Sample {
    let mut t = TarMaker::new(format, prefix);
    let small = b"Some contents".to_vec();
    let big = noise(10_000, 1); // 2 full chunks + 1808 bytes
    let exact = noise(2 * CS as usize, 2); // exactly 2 chunks
    let xfile = b"with xattrs".to_vec();
    let longc = b"long name".to_vec();
    let owned = b"owned".to_vec();
    t.dir("etc/", 0o40755)
        .file("etc/empty", b"")
        .file("etc/small", &small)
        .file("big", &big)
        .file("exact", &exact)
        .symlink("etc/link", "small")
        .hardlink("hard", "etc/small")
        .file_with(
            "x",
            &xfile,
            0o4755,
            &[("user.a", b"v"), ("user.bin", b"\x00\xff\nz=1")],
        )
        .file(&long_name(), &longc)
        .device("dev-c", EntryType::Char, 5, 6)
        .device("dev-b", EntryType::Block, 7, 8)
        .device("fifo", EntryType::Fifo, 0, 0)
        .owned_file("o1", &owned, 1000, 1001, "alice")
        .owned_file("o2", &owned, 1000, 1001, "alice");
    let p = |n: &str| format!("{prefix}{n}");
    let files = vec![
        (p("etc/empty"), vec![]),
        (p("etc/small"), small),
        (p("big"), big),
        (p("exact"), exact),
        (p("x"), xfile),
        (p(&long_name()), longc),
        (p("o1"), owned.clone()),
        (p("o2"), owned),
    ];
    Sample {
        tar: t.finish(),
        files,
    }
}

/// The whole check list, for one tar format and name prefix.
fn check_round_trip(format: Format, prefix: &str) {
    let s = sample(format, prefix);
    let (blob, built) = build_blob(&s.tar, &opts(CS));

    // Digests and sizes.
    assert_eq!(built.digest, Digest::sha256_of(&blob));
    assert_eq!(built.size, blob.len() as u64);
    let u = gunzip(&blob);
    assert_eq!(built.diff_id, Digest::sha256_of(&u));
    assert_eq!(built.uncompressed_size, u.len() as u64);

    // Byte layout of the uncompressed stream: landmark, the input verbatim (without its
    // end-of-archive blocks), the TOC entry, the end-of-archive blocks.
    let body = &s.tar[..s.tar.len() - 1024];
    assert!(s.tar[s.tar.len() - 1024..].iter().all(|b| *b == 0));
    let lm = tar::Header::from_byte_slice(&u[..512]);
    assert_eq!(&*lm.path_bytes(), NO_PREFETCH_LANDMARK.as_bytes());
    assert_eq!(u[512], LANDMARK_CONTENTS);
    assert!(u[513..1024].iter().all(|b| *b == 0));
    assert_eq!(&u[1024..1024 + body.len()], body);
    let toc_hdr = tar::Header::from_byte_slice(&u[1024 + body.len()..][..512]);
    assert_eq!(&*toc_hdr.path_bytes(), TOC_TAR_NAME.as_bytes());
    let json_len = toc_hdr.entry_size().unwrap() as usize;
    let json_at = 1024 + body.len() + 512;
    let json = &u[json_at..json_at + json_len];
    assert_eq!(Digest::sha256_of(json), built.toc_digest);
    let tail = &u[json_at + json_len..];
    assert_eq!(tail.len(), (512 - json_len % 512) % 512 + 1024);
    assert!(tail.iter().all(|b| *b == 0));

    // An independent tar reader sees the input's entries, in order, plus ours.
    let seen_in = list_tar(&s.tar);
    let seen_out = list_tar(&u);
    assert_eq!(seen_out.len(), seen_in.len() + 2);
    assert_eq!(seen_out[0].path, NO_PREFETCH_LANDMARK);
    assert_eq!(seen_out[0].data, vec![LANDMARK_CONTENTS]);
    assert_eq!(&seen_out[1..=seen_in.len()], &seen_in[..]);
    assert_eq!(seen_out.last().unwrap().path, TOC_TAR_NAME);

    // The TOC.
    let (toc, loc) = read_toc(&blob, Some(&built.toc_digest)).unwrap();
    assert_eq!(loc.toc_offset, built.toc_offset);
    assert_eq!(loc.footer_size, FOOTER_SIZE);
    assert_eq!(loc.blob_size, blob.len() as u64);
    assert_eq!(loc.toc_digest, built.toc_digest);
    assert_eq!(toc.version, 1);
    let names: Vec<&str> = toc
        .entries
        .iter()
        .filter(|e| e.kind != EntryKind::Chunk)
        .map(|e| e.name.as_str())
        .collect();
    let mut want_names = vec![NO_PREFETCH_LANDMARK.to_string()];
    want_names.extend(seen_in.iter().map(|e| e.path.clone()));
    assert_eq!(names, want_names);

    for seen in &seen_in {
        let e = toc.entry(&seen.path).unwrap();
        assert_eq!(e.name, seen.path);
        let want_kind = match seen.kind {
            EntryType::Regular => EntryKind::Reg,
            EntryType::Directory => EntryKind::Dir,
            EntryType::Symlink => EntryKind::Symlink,
            EntryType::Link => EntryKind::Hardlink,
            EntryType::Char => EntryKind::Char,
            EntryType::Block => EntryKind::Block,
            EntryType::Fifo => EntryKind::Fifo,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.kind, want_kind, "{}", seen.path);
        assert_eq!(e.mode, seen.mode as i64, "{}", seen.path);
        assert_eq!(e.modtime, "2023-11-14T22:13:20Z", "{}", seen.path);
        assert_eq!(e.modtime_unix(), Some(1_700_000_000));
        assert_eq!(e.link_name, seen.link.clone().unwrap_or_default());
        let xattrs: Vec<(String, Vec<u8>)> = e
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(xattrs, seen.xattrs, "{}", seen.path);
        if want_kind == EntryKind::Reg {
            assert_eq!(e.size, seen.data.len() as u64);
            assert_eq!(e.digest, Some(Digest::sha256_of(&seen.data)));
        } else {
            assert_eq!((e.size, e.offset, e.digest.as_ref()), (0, 0, None));
        }
    }
    let x = toc.entry(&format!("{prefix}x")).unwrap();
    assert_eq!(x.xattrs["user.bin"], b"\x00\xff\nz=1");
    assert_eq!(x.mode, 0o4755);
    let c = toc.entry("dev-c").unwrap();
    assert_eq!((c.dev_major, c.dev_minor), (5, 6));
    let b = toc.entry("dev-b").unwrap();
    assert_eq!((b.dev_major, b.dev_minor), (7, 8));
    // userName/groupName only on the first entry of a uid/gid, as Go writes them.
    let (o1, o2) = (toc.entry("o1").unwrap(), toc.entry("o2").unwrap());
    assert_eq!((o1.uid, o1.gid), (1000, 1001));
    assert_eq!(
        (o1.user_name.as_str(), o1.group_name.as_str()),
        ("alice", "alice")
    );
    assert_eq!(
        (o2.uid, o2.user_name.as_str(), o2.group_name.as_str()),
        (1000, "", "")
    );

    // Chunk layout, as Go writes it: chunkSize on every full chunk, 0 on a short last one.
    let layout = |name: &str| -> Vec<(EntryKind, u64, u64)> {
        let i = toc.entries.iter().position(|e| e.name == name).unwrap();
        let mut v = vec![(
            toc.entries[i].kind.clone(),
            toc.entries[i].chunk_offset,
            toc.entries[i].chunk_size,
        )];
        v.extend(
            toc.entries[i + 1..]
                .iter()
                .take_while(|e| e.kind == EntryKind::Chunk)
                .map(|e| {
                    assert_eq!(e.name, name);
                    (e.kind.clone(), e.chunk_offset, e.chunk_size)
                }),
        );
        v
    };
    use EntryKind::{Chunk, Reg};
    assert_eq!(
        layout(&format!("{prefix}big")),
        vec![(Reg, 0, CS), (Chunk, CS, CS), (Chunk, 2 * CS, 0)]
    );
    assert_eq!(
        layout(&format!("{prefix}exact")),
        vec![(Reg, 0, CS), (Chunk, CS, CS)]
    );
    assert_eq!(layout(&format!("{prefix}etc/small")), vec![(Reg, 0, 0)]);
    assert_eq!(layout(&format!("{prefix}etc/empty")), vec![(Reg, 0, 0)]);
    assert_eq!(toc.entry("etc/empty").unwrap().chunk_digest, None);

    // Gzip members start exactly at the blob start, each payload chunk, the TOC and the
    // footer.
    let mut want_starts: BTreeSet<u64> = toc
        .entries
        .iter()
        .filter(|e| e.kind.is_data() && e.offset != 0)
        .map(|e| e.offset)
        .collect();
    want_starts.extend([0, built.toc_offset, blob.len() as u64 - FOOTER_SIZE]);
    let starts: BTreeSet<u64> = member_starts(&blob).into_iter().collect();
    assert_eq!(starts, want_starts);
    assert_eq!(
        toc.entries
            .iter()
            .filter(|e| e.kind.is_data() && e.offset != 0)
            .count(),
        // landmark + small + big(3) + exact(2) + x + long + o1 + o2
        1 + 1 + 3 + 2 + 1 + 1 + 2
    );

    // Every chunk, fetched by range, inflates to the file's bytes at chunkOffset.
    for (name, data) in &s.files {
        let chunks = toc.chunks_of(name).unwrap();
        let mut covered = 0;
        for c in &chunks {
            let want = &data[c.chunk_offset as usize..(c.chunk_offset + c.chunk_size) as usize];
            assert_eq!(read_chunk(&blob, c).unwrap(), want, "{name}");
            let range = &blob[c.compressed_offset as usize..][..c.compressed_len as usize];
            assert_eq!(
                decompress_chunk(range, c.chunk_size, c.chunk_digest.as_ref()).unwrap(),
                want
            );
            assert_eq!(c.chunk_digest, Some(Digest::sha256_of(want)));
            // The payload starts its member: a single-member gunzip from `offset` begins
            // with it.
            let mut first = vec![0u8; c.chunk_size as usize];
            flate2::read::GzDecoder::new(range)
                .read_exact(&mut first)
                .unwrap();
            assert_eq!(first, want);
            assert_eq!(c.inner_offset, 0);
            covered += c.chunk_size;
        }
        assert_eq!(covered, data.len() as u64, "{name}");
    }
    // A hard link resolves to its target's data.
    assert_eq!(
        toc.chunks_of("hard").unwrap(),
        toc.chunks_of("etc/small").unwrap()
    );
    assert_eq!(
        toc.lookup("/hard").unwrap().name,
        format!("{prefix}etc/small")
    );
    assert!(matches!(
        toc.chunks_of("etc"),
        Err(Error::NotRegularFile(_))
    ));
    assert!(matches!(toc.chunks_of("nope"), Err(Error::NotFound(_))));

    // The merged view has every name once, with the chunks.
    let files = toc.files().unwrap();
    assert_eq!(files.len(), want_names.len());
    let big = files.iter().find(|f| f.name == "big").unwrap();
    assert_eq!(big.chunks.len(), 3);
    let hard = files.iter().find(|f| f.name == "hard").unwrap();
    assert_eq!(hard.entry.kind, EntryKind::Hardlink);
    assert_eq!(hard.chunks, toc.chunks_of("etc/small").unwrap());
    assert_eq!(toc.prefetch_end(), None);

    // Full verification.
    let report = verify(&blob, &built.toc_digest).unwrap();
    assert_eq!(report.files, 1 + s.files.len() as u64); // + landmark
    assert_eq!(report.chunks, 11);
    assert_eq!(
        report.bytes,
        1 + s.files.iter().map(|f| f.1.len() as u64).sum::<u64>()
    );
}

#[test]
fn round_trip_ustar() {
    check_round_trip(Format::Ustar, "");
}

#[test]
fn round_trip_gnu() {
    check_round_trip(Format::Gnu, "");
}

#[test]
fn round_trip_pax() {
    check_round_trip(Format::Pax, "");
}

#[test]
fn round_trip_with_dot_slash_prefix() {
    check_round_trip(Format::Pax, "./");
}

#[test]
fn round_trip_with_slash_prefix() {
    check_round_trip(Format::Pax, "/");
}

#[test]
fn default_chunk_size_is_4_mib() {
    let data = noise((9 << 20) + 123, 7);
    let mut t = TarMaker::new(Format::Ustar, "");
    t.file("large.bin", &data);
    let input = t.finish();
    let o = WriterOptions {
        compression_level: 1,
        ..Default::default()
    };
    assert_eq!(o.chunk_size, 4 << 20);
    let (blob, built) = build_blob(&input, &o);
    let (toc, _) = read_toc(&blob, Some(&built.toc_digest)).unwrap();
    let chunks = toc.chunks_of("large.bin").unwrap();
    assert_eq!(
        chunks
            .iter()
            .map(|c| (c.chunk_offset, c.chunk_size))
            .collect::<Vec<_>>(),
        vec![(0, 4 << 20), (4 << 20, 4 << 20), (8 << 20, (1 << 20) + 123)]
    );
    for c in &chunks {
        let got = read_chunk(&blob, c).unwrap();
        assert_eq!(
            got,
            &data[c.chunk_offset as usize..][..c.chunk_size as usize]
        );
    }
    // The ranges tile the payload: each ends where the next chunk's member starts.
    for w in chunks.windows(2) {
        assert_eq!(
            w[0].compressed_offset + w[0].compressed_len,
            w[1].compressed_offset
        );
    }
    let last = chunks.last().unwrap();
    assert_eq!(
        last.compressed_offset + last.compressed_len,
        built.toc_offset
    );
    assert_eq!(
        toc.entry("large.bin").unwrap().digest,
        Some(Digest::sha256_of(&data))
    );
}

#[test]
fn prioritized_files_come_first() {
    let mut t = TarMaker::new(Format::Ustar, "");
    t.dir("a/", 0o755)
        .dir("a/b/", 0o755)
        .file("a/b/f1", b"f1")
        .file("top", b"top")
        .file("x", b"xx")
        .hardlink("a/hl", "x")
        .file("a/b/f2", b"f2")
        .dir("c/", 0o755)
        .file("c/f3", b"f3");
    let input = t.finish();
    let o = WriterOptions {
        prioritized_files: vec!["/c/f3".into(), "a/hl".into(), "./top".into()],
        ..opts(CS)
    };
    let (blob, built) = build_blob(&input, &o);
    let u = gunzip(&blob);
    let order: Vec<String> = list_tar(&u).into_iter().map(|e| e.path).collect();
    assert_eq!(
        order,
        [
            "c/",
            "c/f3",
            "a/",
            "x",
            "a/hl",
            "top",
            PREFETCH_LANDMARK,
            "a/b/",
            "a/b/f1",
            "a/b/f2",
            TOC_TAR_NAME
        ]
    );
    assert_eq!(Digest::sha256_of(&u), built.diff_id);
    assert!(built.missed_prioritized_files.is_empty());
    let (toc, _) = read_toc(&blob, Some(&built.toc_digest)).unwrap();
    // Everything before the landmark's payload is the prefetch range: it holds the
    // prioritized payloads and none of the others.
    let end = toc.prefetch_end().unwrap();
    assert_eq!(end, toc.entry(PREFETCH_LANDMARK).unwrap().offset);
    for name in ["c/f3", "x", "top"] {
        let c = &toc.chunks_of(name).unwrap()[0];
        assert!(c.compressed_offset + c.compressed_len <= end, "{name}");
    }
    for name in ["a/b/f1", "a/b/f2"] {
        assert!(toc.chunks_of(name).unwrap()[0].compressed_offset > end);
    }
    assert!(toc.entry(NO_PREFETCH_LANDMARK).is_none());
    verify(&blob, &built.toc_digest).unwrap();

    // Same input, same bytes (the spool path is deterministic too).
    let (again, _) = build_blob(&input, &o);
    assert_eq!(again, blob);

    // Missing prioritized files.
    let o2 = WriterOptions {
        prioritized_files: vec!["top".into(), "missing/file".into()],
        ..opts(CS)
    };
    let err = build(&input[..], &mut Vec::new(), &o2).unwrap_err();
    assert!(matches!(err, Error::PrioritizedFileNotFound(ref n) if n == "missing/file"));
    let o3 = WriterOptions {
        allow_prioritized_not_found: true,
        ..o2
    };
    let (blob3, built3) = build_blob(&input, &o3);
    assert_eq!(
        built3.missed_prioritized_files,
        vec!["missing/file".to_string()]
    );
    let order3: Vec<String> = list_tar(&gunzip(&blob3))
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(&order3[..2], ["top", PREFETCH_LANDMARK]);
}

#[test]
fn same_input_gives_identical_output() {
    let s = sample(Format::Pax, "");
    let (a, built_a) = build_blob(&s.tar, &opts(CS));
    let (b, built_b) = build_blob(&s.tar, &opts(CS));
    assert_eq!(a, b);
    assert_eq!(built_a, built_b);
    // The uncompressed stream does not depend on the compression level.
    let o9 = WriterOptions {
        compression_level: 9,
        ..opts(CS)
    };
    let (c, built_c) = build_blob(&s.tar, &o9);
    assert_ne!(c, a);
    let (toc_a, toc_c) = (built_a.toc_offset, built_c.toc_offset);
    assert_ne!(toc_a, toc_c);
    // Only the TOC (which records compressed offsets) differs in the uncompressed stream.
    let (ua, uc) = (gunzip(&a), gunzip(&c));
    let payload_end = |blob: &[u8], toc_offset: u64| gunzip(&blob[..toc_offset as usize]).len();
    let (ea, ec) = (payload_end(&a, toc_a), payload_end(&c, toc_c));
    assert_eq!(ea, ec);
    assert_eq!(ua[..ea], uc[..ec]);
    assert_ne!(built_c.toc_digest, built_a.toc_digest);
}

#[test]
fn gzip_input_is_inflated_first() {
    let s = sample(Format::Gnu, "");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&s.tar).unwrap();
    let gz = gz.finish().unwrap();
    let (_, from_plain) = build_blob(&s.tar, &opts(CS));
    let (_, from_gz) = build_blob(&gz, &opts(CS));
    assert_eq!(from_gz.diff_id, from_plain.diff_id);
    assert_eq!(from_gz.toc_digest, from_plain.toc_digest);
}

#[test]
fn existing_toc_and_landmarks_are_dropped() {
    let mut t = TarMaker::new(Format::Ustar, "");
    t.file("a", b"a")
        .file(TOC_TAR_NAME, b"{\"version\":1,\"entries\":[]}")
        .file(PREFETCH_LANDMARK, &[LANDMARK_CONTENTS])
        .file("./.no.prefetch.landmark", &[LANDMARK_CONTENTS])
        .file("b", b"b");
    let (blob, built) = build_blob(&t.finish(), &opts(CS));
    let order: Vec<String> = list_tar(&gunzip(&blob))
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(order, [NO_PREFETCH_LANDMARK, "a", "b", TOC_TAR_NAME]);
    let (toc, _) = read_toc(&blob, Some(&built.toc_digest)).unwrap();
    assert_eq!(toc.entries.len(), 3);
}

#[test]
fn empty_tar_gives_landmark_and_toc() {
    let input = TarMaker::new(Format::Ustar, "").finish();
    assert_eq!(input.len(), 1024);
    let (blob, built) = build_blob(&input, &opts(CS));
    let (toc, _) = read_toc(&blob, Some(&built.toc_digest)).unwrap();
    assert_eq!(toc.entries.len(), 1);
    assert_eq!(toc.entries[0].name, NO_PREFETCH_LANDMARK);
    assert_eq!(member_starts(&blob).len(), 4);
    // A tar without end-of-archive blocks (EOF at an entry boundary) is accepted too.
    let (blob2, built2) = build_blob(&[], &opts(CS));
    assert_eq!(built2.diff_id, built.diff_id);
    assert_eq!(blob2, blob);
}

#[test]
fn annotations_hold_toc_digest_and_uncompressed_size() {
    let s = sample(Format::Ustar, "");
    let (blob, built) = build_blob(&s.tar, &opts(CS));
    let a = annotations(&built);
    assert_eq!(a.len(), 2);
    assert_eq!(
        a["containerd.io/snapshot/stargz/toc.digest"],
        built.toc_digest.to_string()
    );
    assert_eq!(
        a["io.containers.estargz.uncompressed-size"],
        gunzip(&blob).len().to_string()
    );
}

#[test]
fn file_range_source_reads_a_blob_on_disk() {
    let s = sample(Format::Ustar, "");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let built = build(&s.tar[..], f.as_file_mut(), &opts(CS)).unwrap();
    let src = FileRangeSource::open(f.path()).unwrap();
    assert_eq!(src.size().unwrap(), built.size);
    assert!(is_estargz(&src));
    let (toc, loc) = read_toc(&src, Some(&built.toc_digest)).unwrap();
    assert_eq!(loc.toc_offset, built.toc_offset);
    let c = &toc.chunks_of("etc/small").unwrap()[0];
    assert_eq!(read_chunk(&src, c).unwrap(), b"Some contents");
    assert!(matches!(
        src.read_range(built.size - 1, 2),
        Err(Error::RangeOutOfBounds { .. })
    ));
    assert!(matches!(
        src.read_range(u64::MAX, 2),
        Err(Error::RangeOutOfBounds { .. })
    ));
    assert_eq!(verify(&src, &built.toc_digest).unwrap().files, 9);
}

/// Standard tools read the blob as an ordinary tar.gz (skipped when they are absent).
#[test]
fn system_gzip_and_tar_read_the_blob() {
    let have = |cmd: &str| {
        std::process::Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("tar") || !have("gzip") {
        eprintln!("tar or gzip not installed; skipped");
        return;
    }
    let s = sample(Format::Pax, "");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    build(&s.tar[..], f.as_file_mut(), &opts(CS)).unwrap();
    let ok = std::process::Command::new("gzip")
        .arg("-t")
        .arg(f.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(f.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed.first().unwrap(), NO_PREFETCH_LANDMARK);
    assert_eq!(listed.last().unwrap(), TOC_TAR_NAME);
    assert!(listed.contains(&long_name()));
    assert!(listed.contains(&"etc/small".to_string()));
    assert_eq!(listed.len(), list_tar(&s.tar).len() + 2);
}
