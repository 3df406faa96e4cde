//! Damaged blobs, damaged TOCs and bad input are reported with the right errors.

mod common;

use std::io::Write;

use common::*;
use estargz::*;
use oci_core::Digest;

fn opts() -> WriterOptions {
    WriterOptions {
        chunk_size: 1000,
        compression_level: 6,
        ..Default::default()
    }
}

fn sample() -> (Vec<u8>, Vec<u8>, Built) {
    let data = noise(2500, 3);
    let mut t = TarMaker::new(Format::Ustar, "");
    t.dir("d/", 0o755)
        .file("d/a", b"aaa")
        .file("d/big", &data)
        .file("z", b"zzz");
    let input = t.finish();
    let (blob, built) = build_blob(&input, &opts());
    (blob, data, built)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A TOC member (tar entry + end of archive, gzipped) holding `json`.
fn toc_member(json: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(TOC_TAR_NAME).unwrap();
    h.set_size(json.len() as u64);
    h.set_mode(0);
    h.set_cksum();
    b.append(&h, json).unwrap();
    gzip(&b.into_inner().unwrap())
}

/// `blob` with its TOC replaced (as Go's testutil `rewriteTOCJSON`).
fn with_toc(blob: &[u8], toc_offset: u64, json: &[u8]) -> Vec<u8> {
    let mut out = blob[..toc_offset as usize].to_vec();
    out.extend_from_slice(&toc_member(json));
    out.extend_from_slice(&footer_bytes(toc_offset));
    out
}

#[test]
fn corrupted_compressed_byte_in_a_chunk_is_detected() {
    let (blob, _, built) = sample();
    let (toc, _) = read_toc(&blob, Some(&built.toc_digest)).unwrap();
    let chunks = toc.chunks_of("d/big").unwrap();
    assert_eq!(chunks.len(), 3);
    let c = &chunks[1];
    assert!(read_chunk(&blob, c).is_ok());
    for at in [
        c.compressed_offset + 12,
        c.compressed_offset + c.compressed_len / 2,
    ] {
        let mut bad = blob.clone();
        bad[at as usize] ^= 0x5a;
        let err = read_chunk(&bad, c).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Decompress(_)
                    | Error::ChunkDigestMismatch { .. }
                    | Error::ChunkLengthMismatch { .. }
            ),
            "byte {at}: {err:?}"
        );
        // The TOC itself is intact, so only the chunk check catches it.
        assert!(read_toc(&bad, Some(&built.toc_digest)).is_ok());
        assert!(verify(&bad, &built.toc_digest).is_err());
    }
}

#[test]
fn valid_gzip_with_wrong_content_fails_the_chunk_digest() {
    let (blob, data, built) = sample();
    let (toc, _) = read_toc(&blob, Some(&built.toc_digest)).unwrap();
    let c = &toc.chunks_of("d/big").unwrap()[0];
    let mut chunk = data[..c.chunk_size as usize].to_vec();
    chunk[0] ^= 0xff; // as Go's checkVerifyBrokenContentFail
    let err = decompress_chunk(&gzip(&chunk), c.chunk_size, c.chunk_digest.as_ref()).unwrap_err();
    match err {
        Error::ChunkDigestMismatch { expected, actual } => {
            assert_eq!(&expected, c.chunk_digest.as_ref().unwrap());
            assert_eq!(actual, Digest::sha256_of(&chunk));
        }
        other => panic!("{other:?}"),
    }
    // Short data is a length error, before any digest check.
    let err = decompress_chunk(&gzip(&chunk[..10]), c.chunk_size, None).unwrap_err();
    assert!(matches!(
        err,
        Error::ChunkLengthMismatch {
            expected: 1000,
            actual: 10
        }
    ));
    // Not gzip at all.
    assert!(matches!(
        decompress_chunk(b"plain bytes here", 4, None),
        Err(Error::Decompress(_))
    ));
}

#[test]
fn truncated_blob_and_missing_footer() {
    let (blob, _, built) = sample();
    assert!(is_estargz(&blob));
    for cut in [1usize, 10, 51, 200] {
        let short = blob[..blob.len() - cut].to_vec();
        assert!(!is_estargz(&short), "cut {cut}");
        assert!(
            matches!(read_toc(&short, None), Err(Error::InvalidFooter(_))),
            "cut {cut}"
        );
    }
    let tiny = blob[..40].to_vec();
    assert!(matches!(
        read_toc(&tiny, None),
        Err(Error::BlobTooSmall { size: 40 })
    ));
    assert!(!is_estargz(&tiny));
    // A footer pointing past itself.
    let mut past = blob.clone();
    let n = past.len();
    past[n - 51..].copy_from_slice(&footer_bytes(n as u64));
    assert!(matches!(
        read_toc(&past, None),
        Err(Error::InvalidFooter(_))
    ));
    assert!(!is_estargz(&past));
    // A footer pointing at a place that is not the TOC member.
    let mut wrong = blob.clone();
    wrong[n - 51..].copy_from_slice(&footer_bytes(built.toc_offset + 1));
    assert!(matches!(read_toc(&wrong, None), Err(Error::InvalidToc(_))));
    // A blob with a hole before the TOC: the footer's offset is now wrong.
    let mut holed = blob[..100].to_vec();
    holed.extend_from_slice(&blob[150..]);
    assert!(matches!(read_toc(&holed, None), Err(Error::InvalidToc(_))));
}

#[test]
fn an_ordinary_tar_gz_is_not_estargz() {
    let mut t = TarMaker::new(Format::Ustar, "");
    t.file("a", b"a");
    let tgz = gzip(&t.finish());
    assert!(!is_estargz(&tgz));
    assert!(matches!(read_toc(&tgz, None), Err(Error::InvalidFooter(_))));
}

#[test]
fn toc_digest_must_match_the_annotation() {
    let (blob, _, built) = sample();
    let wrong = Digest::sha256_of(b"something else");
    match read_toc(&blob, Some(&wrong)) {
        Err(Error::TocDigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, built.toc_digest);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        verify(&blob, &wrong),
        Err(Error::TocDigestMismatch { .. })
    ));
    // Without an expected digest the TOC is read, and its digest reported.
    let (_, loc) = read_toc(&blob, None).unwrap();
    assert_eq!(loc.toc_digest, built.toc_digest);
}

#[test]
fn legacy_footer_is_accepted() {
    let (blob, data, built) = sample();
    let mut legacy = blob[..blob.len() - 51].to_vec();
    legacy.extend_from_slice(&legacy_footer_bytes(built.toc_offset));
    assert!(is_estargz(&legacy));
    let (toc, loc) = read_toc(&legacy, Some(&built.toc_digest)).unwrap();
    assert_eq!(loc.footer_size, LEGACY_FOOTER_SIZE);
    assert_eq!(loc.toc_offset, built.toc_offset);
    let (orig, _) = read_toc(&blob, None).unwrap();
    assert_eq!(toc.entries, orig.entries);
    let chunks = toc.chunks_of("d/big").unwrap();
    let got: Vec<u8> = chunks
        .iter()
        .flat_map(|c| read_chunk(&legacy, c).unwrap())
        .collect();
    assert_eq!(got, data);
    // Still a valid tar.gz.
    assert_eq!(gunzip(&legacy), gunzip(&blob));
}

#[test]
fn rewritten_toc_without_chunk_digest_fails_verification() {
    // Go's checkVerifyInvalidTOCEntryFail: "lost digest in a entry".
    let (blob, _, built) = sample();
    let (mut toc, _) = read_toc(&blob, None).unwrap();
    let e = toc.entries.iter_mut().find(|e| e.name == "d/big").unwrap();
    e.chunk_digest = None;
    let json = toc.to_json();
    let rewritten = with_toc(&blob, built.toc_offset, &json);
    // Readable without verification...
    let (read_back, loc) = read_toc(&rewritten, None).unwrap();
    assert_eq!(loc.toc_digest, Digest::sha256_of(&json));
    assert_eq!(read_back.entries.len(), toc.entries.len());
    // ...but not verifiable, even against its own (correct) digest.
    assert!(matches!(
        read_toc(&rewritten, Some(&Digest::sha256_of(&json))),
        Err(Error::MissingChunkDigest { ref name, .. }) if name == "d/big"
    ));
    // And against the original annotation, the digest check fails first.
    assert!(matches!(
        read_toc(&rewritten, Some(&built.toc_digest)),
        Err(Error::TocDigestMismatch { .. })
    ));
}

#[test]
fn rewritten_toc_with_duplicated_offset_fails_verification() {
    // Go's checkVerifyInvalidTOCEntryFail: "duplicated entry offset".
    let (blob, _, built) = sample();
    let (mut toc, _) = read_toc(&blob, None).unwrap();
    let sample_offset = toc.entry("d/a").unwrap().offset;
    let e = toc.entries.iter_mut().find(|e| e.name == "z").unwrap();
    e.offset = sample_offset;
    let json = toc.to_json();
    let rewritten = with_toc(&blob, built.toc_offset, &json);
    assert!(matches!(
        read_toc(&rewritten, Some(&Digest::sha256_of(&json))),
        Err(Error::InvalidToc(_))
    ));
}

#[test]
fn toc_member_with_another_name_or_bad_json_is_rejected() {
    let (blob, _, built) = sample();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("other.json").unwrap();
    h.set_size(2);
    h.set_cksum();
    b.append(&h, &b"{}"[..]).unwrap();
    let mut other = blob[..built.toc_offset as usize].to_vec();
    other.extend_from_slice(&gzip(&b.into_inner().unwrap()));
    other.extend_from_slice(&footer_bytes(built.toc_offset));
    assert!(matches!(read_toc(&other, None), Err(Error::InvalidToc(_))));

    let bad_json = with_toc(&blob, built.toc_offset, b"{\"version\": 1, \"entries\": [");
    assert!(matches!(
        read_toc(&bad_json, None),
        Err(Error::InvalidToc(_))
    ));
}

#[test]
fn bad_input_tars_are_rejected() {
    let o = opts();
    // Not a tar.
    let garbage = vec![b'x'; 2048];
    assert!(matches!(
        build(&garbage[..], &mut Vec::new(), &o),
        Err(Error::InvalidTar(_))
    ));
    // Truncated inside a payload.
    let mut t = TarMaker::new(Format::Ustar, "");
    t.file("f", &noise(3000, 9));
    let full = t.finish();
    assert!(matches!(
        build(&full[..2000], &mut Vec::new(), &o),
        Err(Error::InvalidTar(_))
    ));
    // Truncated inside a header.
    assert!(matches!(
        build(&full[..300], &mut Vec::new(), &o),
        Err(Error::InvalidTar(_))
    ));
    // Broken header checksum.
    let mut bad = full.clone();
    bad[0] ^= 1;
    assert!(matches!(
        build(&bad[..], &mut Vec::new(), &o),
        Err(Error::InvalidTar(_))
    ));
    // A global PAX header (Go's writer rejects it too).
    let data = pax_data(&[("comment", b"hi")]);
    let mut g = tar::Header::new_ustar();
    g.set_path("pax_global_header").unwrap();
    g.set_entry_type(tar::EntryType::XGlobalHeader);
    g.set_size(data.len() as u64);
    g.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&g, &data[..]).unwrap();
    let global = b.into_inner().unwrap();
    assert!(matches!(
        build(&global[..], &mut Vec::new(), &o),
        Err(Error::UnsupportedEntry { .. })
    ));
    // Options.
    for bad_opts in [
        WriterOptions {
            chunk_size: 0,
            ..opts()
        },
        WriterOptions {
            compression_level: 10,
            ..opts()
        },
    ] {
        assert!(matches!(
            build(&full[..], &mut Vec::new(), &bad_opts),
            Err(Error::InvalidOption(_))
        ));
    }
}
