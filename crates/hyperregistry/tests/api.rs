//! Every endpoint, success and error paths, over real HTTP against a running hyperregistry.

mod common;

use common::*;
use oci_core::{Algorithm, Digest};
use reqwest::{Method, StatusCode};

// Every test below runs once per engine combination: `NAME::<meta>::<storage>`.
backend_tests!(
    base_endpoint_announces_the_api_version,
    blob_get_head_ranges_and_delete,
    chunked_upload_with_status_out_of_order_and_final_chunk,
    wrong_digests_keep_nothing,
    sha512_blobs_are_verified,
    cancel_and_mount,
    manifests_put_get_negotiate_and_delete,
    manifest_validation_errors,
    docker_schema2_and_indexes,
    referrers_with_subject_and_filter,
    tags_and_catalog_paginate_in_lexical_order,
);

async fn base_endpoint_announces_the_api_version(backend: Backend) {
    let s = Server::start_on(backend).await;
    for path in ["/v2/", "/v2"] {
        let r = s.req(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "docker-distribution-api-version"),
            "registry/2.0"
        );
        assert!(!header(&r, "x-request-id").is_empty());
    }
    let r = s.req(Method::GET, "/v2/nope").send().await.unwrap();
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

async fn blob_get_head_ranges_and_delete(backend: Backend) {
    let s = Server::start_on(backend).await;
    let data = bytes(3000, 1);
    let d = s.push_blob("lib/app", &data).await;
    let path = format!("/v2/lib/app/blobs/{d}");

    let r = s.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "3000");
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    assert_eq!(header(&r, "accept-ranges"), "bytes");

    let r = s.req(Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    // The OCI conformance cases for Range.
    for (range, start, end) in [
        ("500-1499", 500, 1499),
        ("500-", 500, 2999),
        ("-500", 2500, 2999),
        ("2000-5000", 2000, 2999),
    ] {
        let r = s
            .req(Method::GET, &path)
            .header("range", format!("bytes={range}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {start}-{end}/3000")
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &data[start..=end],
            "{range}"
        );
    }
    for range in [
        "bytes=500-0",
        "bytes=3000-",
        "bytes=5000-6000",
        "lines=1-2",
        "bytes=abc",
    ] {
        let r = s
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-range"), "bytes */3000", "{range}");
        assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    }

    // Several ranges: 206 multipart/byteranges, each part with its Content-Range.
    let r = s
        .req(Method::GET, &path)
        .header("range", "bytes=0-9,100-109,2990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let ct = header(&r, "content-type");
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(&ct)
        .to_string();
    let declared: usize = header(&r, "content-length").parse().unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), declared);
    let parts: Vec<&[u8]> = split(&body, format!("--{boundary}").as_bytes());
    let mut found = Vec::new();
    for part in parts {
        let Some(pos) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..pos]).to_string();
        let Some(cr) = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: bytes "))
        else {
            continue;
        };
        let (a, rest) = cr.split_once('-').unwrap();
        let (b, total) = rest.split_once('/').unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(total, "3000");
        assert_eq!(&part[pos + 4..pos + 4 + (b - a + 1)], &data[a..=b]);
        found.push((a, b));
    }
    assert_eq!(found, vec![(0, 9), (100, 109), (2990, 2999)]);

    // Another repository cannot read it; bad digests are refused.
    assert_error(
        s.req(Method::GET, &format!("/v2/other/blobs/{d}"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        s.req(Method::GET, "/v2/lib/app/blobs/sha256:123")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    )
    .await;
    assert_error(
        s.req(Method::GET, "/v2/lib/app/blobs/md5:abc")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    )
    .await;

    let r = s.req(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_error(
        s.req(Method::GET, &path).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        s.req(Method::DELETE, &path).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
    let r = s.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(p) = find(hay, sep) {
        out.push(&hay[..p]);
        hay = &hay[p + sep.len()..];
    }
    out.push(hay);
    out
}

async fn chunked_upload_with_status_out_of_order_and_final_chunk(backend: Backend) {
    let s = Server::start_on(backend).await;
    let data = bytes(100_000, 2);
    let d = Digest::sha256_of(&data);
    let r = s
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-0");
    let uuid = header(&r, "docker-upload-uuid");
    let loc = header(&r, "location");
    assert!(loc.ends_with(&uuid), "{loc}");

    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", "0-39999")
        .header("content-type", "application/octet-stream")
        .body(data[..40_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-39999");
    let loc = header(&r, "location");

    // A chunk that does not start where the upload ends.
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", "50000-59999")
        .body(data[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    // A Content-Range that disagrees with Content-Length.
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", "40000-40009")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", "garbage")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;

    // Streamed chunk without Content-Range.
    let r = s
        .req(Method::PATCH, &loc)
        .body(data[40_000..70_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-69999");

    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-69999");
    assert_eq!(header(&r, "docker-upload-uuid"), uuid);

    // Not finished yet: the blob does not exist.
    assert_eq!(
        s.req(Method::HEAD, &format!("/v2/team/app/blobs/{d}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // The session belongs to its repository.
    let other = loc.replace("/team/app/", "/team/other/");
    assert_error(
        s.req(Method::GET, &other).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;

    // PUT without digest, then with the last chunk.
    assert_error(
        s.req(Method::PUT, &loc).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    )
    .await;
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "70000-99999")
        .body(data[70_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/team/app/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    let got = s
        .req(Method::GET, &format!("/v2/team/app/blobs/{d}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &data[..]);
    // The session is gone.
    assert_error(
        s.req(Method::GET, &loc).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
}

async fn wrong_digests_keep_nothing(backend: Backend) {
    let s = Server::start_on(backend).await;
    let data = b"the real content".to_vec();
    let claimed = Digest::sha256_of(b"something else");
    let r = s
        .req(
            Method::POST,
            &format!("/v2/r/blobs/uploads/?digest={claimed}"),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_eq!(
        s.req(Method::HEAD, &format!("/v2/r/blobs/{claimed}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    let loc = s.start_upload("r").await;
    s.req(Method::PATCH, &loc)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={claimed}"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_error(
        s.req(Method::GET, &loc).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_eq!(s.stored_blobs(), 0, "no blob kept");
    assert_eq!(s.stored_uploads(), 0, "no upload data kept");

    // Malformed digest parameters.
    let r = s
        .req(Method::POST, "/v2/r/blobs/uploads/?digest=sha256:nothex")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

async fn sha512_blobs_are_verified(backend: Backend) {
    let s = Server::start_on(backend).await;
    let data = bytes(5000, 3);
    let d = Digest::of(Algorithm::Sha512, &data);
    let r = s
        .req(Method::POST, &format!("/v2/r/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = s
        .req(Method::GET, &format!("/v2/r/blobs/{d}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &data[..]);
    let wrong = Digest::of(Algorithm::Sha512, b"x");
    let loc = s.start_upload("r").await;
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={wrong}"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

async fn cancel_and_mount(backend: Backend) {
    let s = Server::start_on(backend).await;
    let loc = s.start_upload("a").await;
    assert_eq!(
        s.req(Method::DELETE, &loc).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        s.req(Method::PATCH, &loc).body("x").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        s.req(Method::DELETE, &loc).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(s.req(Method::PUT, "/v2/a/blobs/uploads/not-a-session?digest=sha256:0000000000000000000000000000000000000000000000000000000000000000").send().await.unwrap(), StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // Traversal attempts name no session and no endpoint.
    assert_error(
        s.req(Method::PATCH, "/v2/a/blobs/uploads/..%2F..%2Fetc")
            .body("x")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
    )
    .await;

    let data = bytes(1000, 4);
    let d = s.push_blob("src/repo", &data).await;
    // Cross-repository mount.
    let r = s
        .req(
            Method::POST,
            &format!("/v2/dst/one/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/dst/one/blobs/{d}"));
    assert_eq!(
        s.req(Method::GET, &format!("/v2/dst/one/blobs/{d}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        &data[..]
    );
    // Mount without from: any blob the registry has.
    let r = s
        .req(
            Method::POST,
            &format!("/v2/dst/two/blobs/uploads/?mount={d}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // From a repository that lacks it: falls back to a new session.
    let r = s
        .req(
            Method::POST,
            &format!("/v2/dst/three/blobs/uploads/?mount={d}&from=nothing/here"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    // Unknown blob: a new session too.
    let unknown = Digest::sha256_of(b"never pushed");
    let r = s
        .req(
            Method::POST,
            &format!("/v2/dst/four/blobs/uploads/?mount={unknown}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // One copy of the content.
    assert_eq!(s.stored_blobs(), 1);
}

async fn manifests_put_get_negotiate_and_delete(backend: Backend) {
    let s = Server::start_on(backend).await;
    let (m, d) = s.push_image("shop/web", "v1", b"layer-one").await;

    let r = s
        .req(Method::GET, "/v2/shop/web/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &m[..]);
    let r = s
        .req(Method::HEAD, &format!("/v2/shop/web/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), m.len().to_string());
    // A client that only takes Docker schema 2 does not get an OCI manifest by tag.
    let r = s
        .req(Method::GET, "/v2/shop/web/manifests/v1")
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = s
        .req(Method::GET, "/v2/shop/web/manifests/v1")
        .header("accept", format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Tags are mutable pointers.
    let (m2, d2) = s.push_image("shop/web", "v1", b"layer-two").await;
    let r = s
        .req(Method::GET, "/v2/shop/web/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d2.to_string());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &m2[..]);
    assert_eq!(
        s.req(Method::GET, &format!("/v2/shop/web/manifests/{d}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // PUT by digest with ?tag= parameters.
    let r = s
        .req(
            Method::PUT,
            &format!("/v2/shop/web/manifests/{d}?tag=a&tag=b"),
        )
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/shop/web/manifests/{d}")
    );
    for t in ["a", "b"] {
        let r = s
            .req(Method::GET, &format!("/v2/shop/web/manifests/{t}"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    }
    // PUT by a digest that does not match the body.
    let r = s
        .put_manifest("shop/web", &d2.to_string(), OCI_MANIFEST, &m)
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // Delete one tag: the others stay.
    assert_eq!(
        s.req(Method::DELETE, "/v2/shop/web/manifests/a")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_error(
        s.req(Method::GET, "/v2/shop/web/manifests/a")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        s.req(Method::GET, "/v2/shop/web/manifests/b")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Delete by digest: its tags go with it.
    assert_eq!(
        s.req(Method::DELETE, &format!("/v2/shop/web/manifests/{d}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_error(
        s.req(Method::GET, "/v2/shop/web/manifests/b")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        s.req(Method::GET, &format!("/v2/shop/web/manifests/{d}"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        s.req(Method::DELETE, &format!("/v2/shop/web/manifests/{d}"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let tags: serde_json::Value = s
        .req(Method::GET, "/v2/shop/web/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    assert_error(
        s.req(Method::GET, "/v2/shop/web/manifests/no-such-tag")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

async fn manifest_validation_errors(backend: Backend) {
    let s = Server::start_on(backend).await;
    let cfg = s.push_blob("v", b"{}").await;
    let missing = Digest::sha256_of(b"not pushed");
    let m = image_manifest(&cfg, 2, &[(missing.clone(), 10)], None);
    let r = s.put_manifest("v", "t", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(body["errors"][0]["detail"]["digest"], missing.to_string());

    // Wrong size for an existing blob.
    let m = image_manifest(&cfg, 3, &[], None);
    assert_error(
        s.put_manifest("v", "t", OCI_MANIFEST, &m).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
    )
    .await;
    // Garbage, wrong schema, mismatched media type.
    assert_error(
        s.put_manifest("v", "t", OCI_MANIFEST, b"{not json").await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
    )
    .await;
    assert_error(
        s.put_manifest("v", "t", OCI_MANIFEST, br#"{"schemaVersion":1}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
    )
    .await;
    let good = image_manifest(&cfg, 2, &[], None);
    assert_error(
        s.put_manifest("v", "t", DOCKER_MANIFEST, &good).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
    )
    .await;
    // Bad tag.
    assert_error(
        s.put_manifest("v", "-bad", OCI_MANIFEST, &good).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
    )
    .await;
    assert_error(
        s.req(Method::PUT, "/v2/v/manifests/x?tag=.bad")
            .header("content-type", OCI_MANIFEST)
            .body(good.clone())
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
    )
    .await;
    // Over 4 MiB.
    let mut huge = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 4 << 20));
    huge.extend(br#""}}"#);
    assert_error(
        s.put_manifest("v", "t", OCI_MANIFEST, &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "SIZE_INVALID",
    )
    .await;
    // Non-distributable layers need not exist.
    let foreign = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg.to_string(),"size":2},
        "layers": [{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":missing.to_string(),"size":10,"urls":["https://example.com/l"]}]
    })).unwrap();
    assert_eq!(
        s.put_manifest("v", "foreign", OCI_MANIFEST, &foreign)
            .await
            .status(),
        StatusCode::CREATED
    );
    // Bad names.
    assert_error(
        s.req(Method::GET, "/v2/UPPER/manifests/t")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "NAME_INVALID",
    )
    .await;
    assert_error(
        s.req(Method::GET, "/v2/a..b/tags/list")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "NAME_INVALID",
    )
    .await;
    assert_error(
        s.req(Method::GET, "/v2/v/manifests/sha256:zz")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    )
    .await;
    // Unsupported methods.
    assert_error(
        s.req(Method::POST, "/v2/v/manifests/t")
            .send()
            .await
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
    )
    .await;
}

async fn docker_schema2_and_indexes(backend: Backend) {
    let s = Server::start_on(backend).await;
    let cfg = s.push_blob("multi", b"{\"os\":\"linux\"}").await;
    let layer = s.push_blob("multi", b"docker layer").await;
    let dm = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType":"application/vnd.docker.container.image.v1+json","digest":cfg.to_string(),"size":14},
        "layers": [{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":layer.to_string(),"size":12}]
    })).unwrap();
    let r = s.put_manifest("multi", "amd64", DOCKER_MANIFEST, &dm).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let dd = Digest::sha256_of(&dm);

    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": dd.to_string(), "size": dm.len(), "platform": {"architecture":"amd64","os":"linux"}}]
    })).unwrap();
    assert_eq!(
        s.put_manifest("multi", "latest", DOCKER_LIST, &list)
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = s
        .req(Method::GET, "/v2/multi/manifests/latest")
        .header("accept", format!("{DOCKER_LIST}, {DOCKER_MANIFEST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_LIST);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &list[..]);

    // An index whose child is missing.
    let missing = Digest::sha256_of(b"no such manifest");
    let bad = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing.to_string(), "size": 10}]
    }))
    .unwrap();
    assert_error(
        s.put_manifest("multi", "broken", OCI_INDEX, &bad).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

async fn referrers_with_subject_and_filter(backend: Backend) {
    let s = Server::start_on(backend).await;
    let (m, subject) = s.push_image("art", "v1", b"payload").await;
    let empty = s.push_blob("art", b"{}").await;
    let mk = |artifact_type: &str, note: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType":"application/vnd.oci.empty.v1+json","digest":empty.to_string(),"size":2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": m.len()},
            "annotations": {"note": note}
        }))
        .unwrap()
    };
    let sig = mk("application/vnd.example.signature", "sig");
    let sbom = mk("application/vnd.example.sbom", "sbom");
    for body in [&sig, &sbom] {
        let d = Digest::sha256_of(body);
        let r = s
            .put_manifest("art", &d.to_string(), OCI_MANIFEST, body)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), subject.to_string());
    }
    let r = s
        .req(Method::GET, &format!("/v2/art/referrers/{subject}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(header(&r, "oci-filters-applied").is_empty());
    let idx: serde_json::Value = r.json().await.unwrap();
    let ms = idx["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    assert!(
        ms.iter()
            .any(|d| d["artifactType"] == "application/vnd.example.sbom"
                && d["annotations"]["note"] == "sbom")
    );

    let r = s
        .req(
            Method::GET,
            &format!("/v2/art/referrers/{subject}?artifactType=application/vnd.example.signature"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let idx: serde_json::Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        idx["manifests"][0]["digest"],
        Digest::sha256_of(&sig).to_string()
    );

    // No referrers: an empty index, even for unknown repositories.
    for path in [
        format!("/v2/art/referrers/{}", Digest::sha256_of(b"x")),
        format!("/v2/never/pushed/referrers/{subject}"),
    ] {
        let r = s.req(Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let idx: serde_json::Value = r.json().await.unwrap();
        assert_eq!(idx["manifests"], serde_json::json!([]));
        assert_eq!(idx["schemaVersion"], 2);
    }
    assert_error(
        s.req(Method::GET, "/v2/art/referrers/sha256:bad")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    )
    .await;
}

async fn tags_and_catalog_paginate_in_lexical_order(backend: Backend) {
    let s = Server::start_on(backend).await;
    let (m, _) = s.push_image("page/me", "zeta", b"l").await;
    for t in ["alpha", "Beta", "gamma", "delta", "1.0"] {
        assert_eq!(
            s.put_manifest("page/me", t, OCI_MANIFEST, &m)
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let all: serde_json::Value = s
        .req(Method::GET, "/v2/page/me/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["name"], "page/me");
    assert_eq!(
        all["tags"],
        serde_json::json!(["1.0", "Beta", "alpha", "delta", "gamma", "zeta"])
    );

    let mut collected = Vec::new();
    let mut next = Some("/v2/page/me/tags/list?n=4".to_string());
    let mut pages = 0;
    while let Some(url) = next {
        let r = s.req(Method::GET, &url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let link = header(&r, "link");
        next = (!link.is_empty()).then(|| {
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_string()
        });
        let page: serde_json::Value = r.json().await.unwrap();
        let tags: Vec<String> = serde_json::from_value(page["tags"].clone()).unwrap();
        assert!(tags.len() <= 4);
        collected.extend(tags);
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert_eq!(
        collected,
        vec!["1.0", "Beta", "alpha", "delta", "gamma", "zeta"]
    );
    let r: serde_json::Value = s
        .req(Method::GET, "/v2/page/me/tags/list?n=2&last=alpha")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["tags"], serde_json::json!(["delta", "gamma"]));
    let r: serde_json::Value = s
        .req(Method::GET, "/v2/page/me/tags/list?n=0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["tags"], serde_json::json!([]));
    assert_error(
        s.req(Method::GET, "/v2/page/me/tags/list?n=-1")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "PAGINATION_NUMBER_INVALID",
    )
    .await;
    assert_error(
        s.req(Method::GET, "/v2/no/such/tags/list")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
    )
    .await;

    for repo in ["b/x", "a", "c", "a/b"] {
        s.push_blob(repo, b"1").await;
    }
    let r = s.req(Method::GET, "/v2/_catalog?n=3").send().await.unwrap();
    let link = header(&r, "link");
    assert_eq!(link, "</v2/_catalog?n=3&last=b%2Fx>; rel=\"next\"");
    let c: serde_json::Value = r.json().await.unwrap();
    assert_eq!(c["repositories"], serde_json::json!(["a", "a/b", "b/x"]));
    let c: serde_json::Value = s
        .req(Method::GET, "/v2/_catalog?n=3&last=b%2Fx")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["repositories"], serde_json::json!(["c", "page/me"]));
}
