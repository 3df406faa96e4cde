//! The management API (`/api/v1`), `/metrics` and webhook notifications, against a real
//! hyperregistry populated through `/v2`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use oci_core::Digest;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

// These run once per engine combination (`NAME::<meta>::<storage>`): the listings, figures
// and repository deletes are per-engine queries.
backend_tests!(
    images_and_tags_of_a_populated_registry,
    deletes_through_the_management_api_show_on_v2,
);

/// An image pushed through `/v2`, with the sizes the management API should report.
struct Pushed {
    manifest: Vec<u8>,
    digest: Digest,
    config: (Digest, usize),
    layers: Vec<(Digest, usize)>,
}

impl Pushed {
    /// Manifest + config + layers.
    fn size(&self) -> u64 {
        (self.manifest.len() + self.config.1 + self.layers.iter().map(|l| l.1).sum::<usize>())
            as u64
    }
}

/// Push a config (with `created`, `architecture`, `os`, `variant`) and layers, then an OCI
/// manifest under `reference` (a tag or the manifest's digest).
async fn push(
    s: &Server,
    repo: &str,
    reference: Option<&str>,
    arch: &str,
    variant: Option<&str>,
    layers: &[&[u8]],
) -> Pushed {
    let mut config = json!({
        "created": "2024-05-06T07:08:09Z",
        "architecture": arch,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    if let Some(v) = variant {
        config["variant"] = v.into();
    }
    let config = serde_json::to_vec(&config).unwrap();
    let cd = s.push_blob(repo, &config).await;
    let mut ls = Vec::new();
    for l in layers {
        ls.push((s.push_blob(repo, l).await, l.len()));
    }
    let m = image_manifest(&cd, config.len(), &ls, None);
    let d = Digest::sha256_of(&m);
    let reference = reference.map_or(d.to_string(), str::to_string);
    let r = s.put_manifest(repo, &reference, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    Pushed {
        manifest: m,
        digest: d,
        config: (cd, config.len()),
        layers: ls,
    }
}

async fn get_json(s: &Server, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = s.req(Method::GET, path).send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn link(h: &reqwest::header::HeaderMap) -> Option<String> {
    let l = h.get("link")?.to_str().unwrap();
    let start = l.find('<')? + 1;
    let end = l.find('>')?;
    assert!(l.ends_with("rel=\"next\""), "{l}");
    Some(l[start..end].to_string())
}

fn names(v: &Value, list: &str, key: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[key].as_str().unwrap().to_string())
        .collect()
}

/// The registry of this test: four repositories, several tags, an index with two platforms,
/// a referrer.
struct Fixture {
    app_v1: Pushed,
    app_v2: Pushed,
    referrer: Vec<u8>,
    referrer_blob: (Digest, usize),
    db: Pushed,
    amd64: Pushed,
    arm64: Pushed,
    index: Vec<u8>,
    other: Pushed,
}

async fn populate(s: &Server) -> Fixture {
    let app_v1 = push(s, "team/app", Some("v1"), "amd64", None, &[&bytes(1000, 1)]).await;
    let app_v2 = push(
        s,
        "team/app",
        Some("v2"),
        "amd64",
        None,
        &[&bytes(1000, 1), &bytes(500, 2)],
    )
    .await;
    let r = s
        .put_manifest("team/app", "latest", OCI_MANIFEST, &app_v2.manifest)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A referrer (an SBOM-like artifact) of v1, pushed by digest.
    let empty = s.push_blob("team/app", b"{}").await;
    let sbom = s.push_blob("team/app", b"sbom contents").await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sbom.to_string(), "size": 13}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": app_v1.digest.to_string(), "size": app_v1.manifest.len()},
    }))
    .unwrap();
    let rd = Digest::sha256_of(&referrer);
    let r = s
        .put_manifest("team/app", &rd.to_string(), OCI_MANIFEST, &referrer)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let db = push(s, "team/db", Some("15"), "amd64", None, &[&bytes(2000, 3)]).await;

    let amd64 = push(s, "tools/multi", None, "amd64", None, &[&bytes(300, 4)]).await;
    let arm64 = push(
        s,
        "tools/multi",
        None,
        "arm64",
        Some("v8"),
        &[&bytes(400, 5), &bytes(300, 4)],
    )
    .await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64.digest.to_string(), "size": amd64.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64.digest.to_string(), "size": arm64.manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }))
    .unwrap();
    let r = s
        .put_manifest("tools/multi", "1.0", OCI_INDEX, &index)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    let other = push(s, "other", Some("x"), "amd64", None, &[&bytes(10, 6)]).await;
    Fixture {
        app_v1,
        app_v2,
        referrer,
        referrer_blob: (sbom, 13),
        db,
        amd64,
        arm64,
        index,
        other,
    }
}

async fn images_and_tags_of_a_populated_registry(backend: Backend) {
    let s = Server::start_on(backend).await;
    let f = populate(&s).await;

    // Every repository, in name order, with its figures.
    let (status, h, v) = get_json(&s, "/api/v1/registry/images").await;
    assert_eq!(status, StatusCode::OK);
    assert!(link(&h).is_none());
    assert_eq!(
        names(&v, "images", "name"),
        ["other", "team/app", "team/db", "tools/multi"]
    );
    let by_name: HashMap<String, Value> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_string(), i.clone()))
        .collect();
    let app = &by_name["team/app"];
    assert_eq!(app["tag_count"], 3);
    // Manifests v1, v2 and the referrer, plus distinct blobs: v1's config and layer, v2's
    // second layer (its config and first layer are v1's), the referrer's `{}` and SBOM.
    assert_eq!(f.app_v1.config, f.app_v2.config);
    let app_total = f.app_v1.size()
        + f.app_v2.manifest.len() as u64
        + f.app_v2.layers[1].1 as u64
        + f.referrer.len() as u64
        + 2
        + f.referrer_blob.1 as u64;
    assert_eq!(app["total_size"], app_total);
    assert_eq!(by_name["team/db"]["total_size"], f.db.size());
    assert_eq!(by_name["team/db"]["tag_count"], 1);
    let multi_total = f.index.len() as u64 + f.amd64.size() + f.arm64.size() - 300;
    assert_eq!(by_name["tools/multi"]["total_size"], multi_total);
    let updated = app["last_update"].as_str().unwrap();
    assert!(
        updated.len() == 20 && updated.ends_with('Z') && updated.as_bytes()[10] == b'T',
        "RFC 3339: {updated}"
    );

    // Pagination with Link, like _catalog.
    let (_, h, v) = get_json(&s, "/api/v1/registry/images?n=3").await;
    assert_eq!(
        names(&v, "images", "name"),
        ["other", "team/app", "team/db"]
    );
    let next = link(&h).expect("a next page");
    assert_eq!(next, "/api/v1/registry/images?n=3&last=team%2Fdb");
    let (_, h, v) = get_json(&s, &next).await;
    assert_eq!(names(&v, "images", "name"), ["tools/multi"]);
    assert!(link(&h).is_none());

    // Search by substring, paginated too.
    let (_, h, v) = get_json(&s, "/api/v1/registry/images?q=team&n=1").await;
    assert_eq!(names(&v, "images", "name"), ["team/app"]);
    let next = link(&h).unwrap();
    assert!(next.contains("q=team"), "{next}");
    let (_, _, v) = get_json(&s, &next).await;
    assert_eq!(names(&v, "images", "name"), ["team/db"]);
    let (_, _, v) = get_json(&s, "/api/v1/registry/images?q=ulti").await;
    assert_eq!(names(&v, "images", "name"), ["tools/multi"]);
    let (_, _, v) = get_json(&s, "/api/v1/registry/images?q=%25").await;
    assert_eq!(v["images"].as_array().unwrap().len(), 0);
    let r = s
        .req(Method::GET, "/api/v1/registry/images?n=many")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID").await;

    // One repository: its tags with digests and times.
    let (status, _, v) = get_json(&s, "/api/v1/registry/images/team/app").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["name"], "team/app");
    assert_eq!(v["total_size"], app_total);
    assert_eq!(names(&v, "tags", "tag"), ["latest", "v1", "v2"]);
    assert_eq!(v["tags"][1]["digest"], f.app_v1.digest.to_string());
    assert_eq!(v["tags"][0]["digest"], f.app_v2.digest.to_string());
    assert_eq!(v["tags"][1]["size"], f.app_v1.manifest.len());
    assert!(v["tags"][1]["updated"].as_str().unwrap().ends_with('Z'));
    let (_, h, v) = get_json(&s, "/api/v1/registry/images/team/app?n=2").await;
    assert_eq!(names(&v, "tags", "tag"), ["latest", "v1"]);
    let (_, _, v) = get_json(&s, &link(&h).unwrap()).await;
    assert_eq!(names(&v, "tags", "tag"), ["v2"]);
    let r = s
        .req(Method::GET, "/api/v1/registry/images/nope/x")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    let r = s
        .req(Method::GET, "/api/v1/registry/images/UPPER")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;

    // Tags across repositories.
    let (_, h, v) = get_json(&s, "/api/v1/registry/tags").await;
    assert!(link(&h).is_none());
    let pairs: Vec<String> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["repository"].as_str().unwrap(),
                t["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            "other:x",
            "team/app:latest",
            "team/app:v1",
            "team/app:v2",
            "team/db:15",
            "tools/multi:1.0"
        ]
    );
    assert_eq!(v["tags"][5]["media_type"], OCI_INDEX);
    let (_, h, v) = get_json(&s, "/api/v1/registry/tags?n=2").await;
    assert_eq!(names(&v, "tags", "tag"), ["x", "latest"]);
    let next = link(&h).unwrap();
    assert_eq!(next, "/api/v1/registry/tags?n=2&last=team%2Fapp%3Alatest");
    let (_, _, v) = get_json(&s, &next).await;
    assert_eq!(names(&v, "tags", "tag"), ["v1", "v2"]);
    let (_, _, v) = get_json(&s, "/api/v1/registry/tags?q=app:v").await;
    assert_eq!(names(&v, "tags", "tag"), ["v1", "v2"]);
    let (_, _, v) = get_json(&s, "/api/v1/registry/tags?q=multi").await;
    assert_eq!(names(&v, "tags", "tag"), ["1.0"]);

    // One tag of an image: sizes, config fields, layers, referrers, the manifest itself.
    let (status, _, v) = get_json(&s, "/api/v1/registry/tags/team/app:v1").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["repository"], "team/app");
    assert_eq!(v["tag"], "v1");
    assert_eq!(v["digest"], f.app_v1.digest.to_string());
    assert_eq!(v["media_type"], OCI_MANIFEST);
    assert_eq!(v["manifest_size"], f.app_v1.manifest.len());
    assert_eq!(v["size"], f.app_v1.size());
    assert_eq!(v["created"], "2024-05-06T07:08:09Z");
    assert_eq!(v["architecture"], "amd64");
    assert_eq!(v["os"], "linux");
    assert_eq!(v["layer_count"], 1);
    assert!(v["platforms"].is_null());
    assert_eq!(
        v["manifest"],
        serde_json::from_slice::<Value>(&f.app_v1.manifest).unwrap()
    );
    assert_eq!(v["referrers"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["referrers"][0]["digest"],
        Digest::sha256_of(&f.referrer).to_string()
    );
    assert_eq!(v["referrers"][0]["artifact_type"], "application/spdx+json");
    let (_, _, v) = get_json(&s, "/api/v1/registry/tags/team/app:v2").await;
    assert_eq!(v["layer_count"], 2);
    assert_eq!(v["size"], f.app_v2.size());

    // An index: one entry per platform.
    let (status, _, v) = get_json(&s, "/api/v1/registry/tags/tools/multi:1.0").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["media_type"], OCI_INDEX);
    assert_eq!(v["size"], multi_total);
    assert!(v["layer_count"].is_null());
    let platforms = v["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    assert_eq!(platforms[0]["architecture"], "amd64");
    assert_eq!(platforms[0]["os"], "linux");
    assert_eq!(platforms[0]["digest"], f.amd64.digest.to_string());
    assert_eq!(platforms[0]["size"], f.amd64.size());
    assert_eq!(platforms[0]["layer_count"], 1);
    assert_eq!(platforms[1]["architecture"], "arm64");
    assert_eq!(platforms[1]["variant"], "v8");
    assert_eq!(platforms[1]["size"], f.arm64.size());
    assert_eq!(platforms[1]["layer_count"], 2);
    assert_eq!(platforms[1]["created"], "2024-05-06T07:08:09Z");
    assert_eq!(v["manifest"]["manifests"].as_array().unwrap().len(), 2);

    for (path, status, code) in [
        (
            "/api/v1/registry/tags/team/app:nope",
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/api/v1/registry/tags/nope/x:v1",
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/api/v1/registry/tags/team/app",
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            "/api/v1/registry/tags/Team/app:v1",
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
    ] {
        let r = s.req(Method::GET, path).send().await.unwrap();
        assert_error(r, status, code).await;
    }
    let _ = f.other;
}

async fn deletes_through_the_management_api_show_on_v2(backend: Backend) {
    let s = Server::start_on(backend).await;
    let f = populate(&s).await;

    // Warm the manifest cache so the deletes must invalidate it.
    for path in ["/v2/team/app/manifests/latest", "/v2/team/db/manifests/15"] {
        let r = s
            .req(Method::GET, path)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }

    // A tag.
    let r = s
        .req(Method::DELETE, "/api/v1/registry/tags/team/app:latest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["digest"], f.app_v2.digest.to_string());
    let r = s
        .req(Method::GET, "/v2/team/app/manifests/latest")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    // The manifest stays under its other tag.
    let r = s
        .req(Method::GET, "/v2/team/app/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .req(Method::DELETE, "/api/v1/registry/tags/team/app:latest")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let (_, _, v) = get_json(&s, "/api/v1/registry/images/team/app").await;
    assert_eq!(names(&v, "tags", "tag"), ["v1", "v2"]);

    // A repository: tags, manifests and blob links go; blob content stays for GC.
    let r = s
        .req(Method::DELETE, "/api/v1/registry/images/team/db")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "team/db");
    assert_eq!(v["tags"], json!(["15"]));
    assert_eq!(v["manifests"], json!([f.db.digest.to_string()]));
    assert_eq!(v["blob_links"], 2);
    let r = s
        .req(Method::GET, "/v2/team/db/manifests/15")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = s
        .req(Method::GET, "/v2/team/db/tags/list")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    let layer = &f.db.layers[0].0;
    let r = s
        .req(Method::GET, &format!("/v2/team/db/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    assert!(
        s.content_path(layer).exists(),
        "blob content is left for garbage collection"
    );
    let (_, _, v) = get_json(&s, "/v2/_catalog").await;
    assert_eq!(
        v["repositories"],
        json!(["other", "team/app", "tools/multi"])
    );
    let (_, _, v) = get_json(&s, "/api/v1/registry/images").await;
    assert_eq!(
        names(&v, "images", "name"),
        ["other", "team/app", "tools/multi"]
    );
    let r = s
        .req(Method::DELETE, "/api/v1/registry/images/team/db")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;

    // The name can be pushed again from scratch.
    push(&s, "team/db", Some("16"), "amd64", None, &[&bytes(20, 9)]).await;
    let (_, _, v) = get_json(&s, "/api/v1/registry/images/team/db").await;
    assert_eq!(names(&v, "tags", "tag"), ["16"]);
}

#[tokio::test]
async fn deletes_follow_the_registry_policy() {
    let s = Server::start_with_env(&[("REGISTRY_STORAGE_DELETE_ENABLED", "false")]).await;
    s.push_image("a/b", "v1", b"layer").await;
    for path in [
        "/api/v1/registry/images/a/b",
        "/api/v1/registry/tags/a/b:v1",
    ] {
        let r = s.req(Method::DELETE, path).send().await.unwrap();
        assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    }
    let (status, _, _) = get_json(&s, "/api/v1/registry/tags/a/b:v1").await;
    assert_eq!(status, StatusCode::OK);

    let s =
        Server::start_with_env(&[("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true")]).await;
    for path in [
        "/api/v1/registry/images/a/b",
        "/api/v1/registry/tags/a/b:v1",
    ] {
        let r = s.req(Method::DELETE, path).send().await.unwrap();
        assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    }
}

/// Whatever the PUT accepts, the management API can read back: a manifest with a
/// 5,000-deep unknown field is refused with MANIFEST_INVALID (it used to be stored, and then
/// broke `GET /api/v1/registry/tags/...` with a 500); one within the bound is served, and
/// so is a tag whose config blob is too deep to read (its facts are left out).
#[tokio::test]
async fn stored_json_is_read_back_within_the_bounds_it_was_accepted_with() {
    let s = Server::start().await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = s.push_blob("deep/app", config).await;
    let ld = s.push_blob("deep/app", b"layer").await;
    let with_field = |levels: usize| {
        let m = image_manifest(&cd, config.len(), &[(ld.clone(), 5)], None);
        let text = String::from_utf8(m).unwrap();
        let deep = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        format!(
            "{},\"x-deep\":{deep}}}",
            text.trim_end().trim_end_matches('}')
        )
        .into_bytes()
    };
    let r = s
        .put_manifest("deep/app", "v1", OCI_MANIFEST, &with_field(5000))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let (status, _, _) = get_json(&s, "/api/v1/registry/tags/deep/app:v1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = s
        .put_manifest("deep/app", "v1", OCI_MANIFEST, &with_field(40))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (status, _, v) = get_json(&s, "/api/v1/registry/tags/deep/app:v1").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["manifest"]["x-deep"].is_array());
    assert_eq!(v["architecture"], "amd64");

    // A config blob is not checked at upload (a blob is bytes); a deep one is skipped.
    let deep_config = format!(
        "{{\"architecture\":\"arm64\",\"os\":\"linux\",\"x\":{}1{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let dc = s.push_blob("deep/app", deep_config.as_bytes()).await;
    let m = image_manifest(&dc, deep_config.len(), &[(ld.clone(), 5)], None);
    let r = s.put_manifest("deep/app", "v2", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (status, _, v) = get_json(&s, "/api/v1/registry/tags/deep/app:v2").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v.get("architecture").is_none_or(Value::is_null), "{v}");
    let (status, _, _) = get_json(&s, "/api/v1/registry/images/deep/app").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let s = Server::start().await;
    s.push_image("team/app", "v1", b"layer").await;
    let (status, h, doc) = get_json(&s, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    // The external-registry and replication routes are in the same document; tests/external.rs
    // calls each of them.
    let external: Vec<String> = documented
        .iter()
        .filter(|op| {
            op.contains(" /api/v1/registry/external") || op.contains(" /api/v1/replication/")
        })
        .cloned()
        .collect();
    assert_eq!(external.len(), 13, "{external:?}");
    documented.retain(|op| !external.contains(op));
    assert_eq!(
        documented,
        [
            "DELETE /api/v1/registry/images/{name}",
            "DELETE /api/v1/registry/tags/{name}:{tag}",
            "GET /api/v1/health",
            "GET /api/v1/openapi.json",
            "GET /api/v1/registry/images",
            "GET /api/v1/registry/images/{name}",
            "GET /api/v1/registry/tags",
            "GET /api/v1/registry/tags/{name}:{tag}",
            "GET /metrics",
        ]
    );
    // Every documented operation is routed: it answers something other than the "no such
    // endpoint" fallback or axum's 405. GETs before DELETEs, so the data is still there.
    documented.sort_by_key(|op| (op.starts_with("DELETE"), op.contains("/images/")));
    for op in &documented {
        let (method, path) = op.split_once(' ').unwrap();
        let concrete = path.replace("{name}", "team/app").replace("{tag}", "v1");
        let r = s
            .req(Method::from_bytes(method.as_bytes()).unwrap(), &concrete)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status.is_success(),
            "{op} ({concrete}) answered {status}: {body}"
        );
        // Each documented response schema of a JSON body names its fields.
        let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            responses[status.as_str()].is_object(),
            "{op}: {status} not documented"
        );
    }
    // And what is not documented is not routed.
    for (method, path) in [
        (Method::GET, "/api/v1/registry"),
        (Method::GET, "/api/v1/nothing/here"),
        (Method::POST, "/api/v1/registry/images"),
        (Method::PUT, "/api/v1/registry/tags/team/app:v1"),
    ] {
        let r = s.req(method.clone(), path).send().await.unwrap();
        assert!(
            matches!(
                r.status(),
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ),
            "{method} {path}: {}",
            r.status()
        );
    }
    let r = s
        .req(Method::GET, "/api/v1/nothing/here")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn health_reports_the_database_and_the_blob_store() {
    let s = Server::start().await;
    let (status, _, v) = get_json(&s, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["checks"]["database"]["status"], "ok");
    assert_eq!(v["checks"]["storage"]["status"], "ok");

    // Break the blob store: its directory becomes a file.
    let blobs = s.root().join("blobs");
    std::fs::remove_dir_all(&blobs).unwrap();
    std::fs::write(&blobs, b"not a directory").unwrap();
    let (status, _, v) = get_json(&s, "/api/v1/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(v["checks"]["database"]["status"], "ok");
    assert_eq!(v["checks"]["storage"]["status"], "error");
    assert!(
        v["checks"]["storage"]["error"]
            .as_str()
            .unwrap()
            .contains("directory"),
        "{v}"
    );
}

/// Samples of the Prometheus text format: `name{labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample line");
        out.insert(key.to_string(), value.parse().expect("sample value"));
    }
    out
}

async fn scrape(s: &Server) -> BTreeMap<String, f64> {
    let r = s.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "content-type").starts_with("text/plain; version=0.0.4"));
    parse_metrics(&r.text().await.unwrap())
}

fn sample(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_requests() {
    let s = Server::start().await;
    let before = scrape(&s).await;
    assert_eq!(sample(&before, "hyperregistry_upload_sessions"), 0.0);
    assert_eq!(sample(&before, "hyperregistry_storage_bytes"), 0.0);

    let data = bytes(10_000, 7);
    let d = s.push_blob("m/x", &data).await;
    for _ in 0..2 {
        let r = s
            .req(Method::GET, &format!("/v2/m/x/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 10_000);
    }
    let r = s
        .req(Method::GET, "/v2/m/x/manifests/missing")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (m, _) = s.push_image("m/x", "v1", b"a layer").await;
    let _session = s.start_upload("m/x").await;
    let (status, _, _) = get_json(&s, "/api/v1/registry/images").await;
    assert_eq!(status, StatusCode::OK);
    // Storage figures are cached for a few seconds.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let after = scrape(&s).await;

    let delta = |key: &str| sample(&after, key) - sample(&before, key);
    assert_eq!(
        delta(r#"hyperregistry_http_requests_total{method="GET",route="blob",status="200"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"hyperregistry_http_requests_total{method="GET",route="manifest",status="404"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"hyperregistry_http_requests_total{method="PUT",route="manifest",status="201"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"hyperregistry_http_requests_total{method="POST",route="upload",status="202"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"hyperregistry_http_requests_total{method="GET",route="api",status="200"}"#),
        1.0
    );
    // The monolithic upload of 10 000 bytes, the image's config and layer.
    let config_len = format!(r#"{{"architecture":"amd64","os":"linux","layer":{}}}"#, 7).len();
    assert_eq!(
        delta(r#"hyperregistry_http_request_bytes_total{route="upload"}"#),
        (10_000 + config_len + 7) as f64
    );
    assert_eq!(
        delta(r#"hyperregistry_http_request_bytes_total{route="manifest"}"#),
        m.len() as f64
    );
    assert!(delta(r#"hyperregistry_http_response_bytes_total{route="blob"}"#) >= 20_000.0);
    assert_eq!(
        delta(r#"hyperregistry_http_request_duration_seconds_count{method="GET",route="blob"}"#),
        2.0
    );
    assert_eq!(sample(&after, "hyperregistry_upload_sessions"), 1.0);
    assert_eq!(sample(&after, "hyperregistry_blobs"), 3.0);
    assert_eq!(
        sample(&after, "hyperregistry_storage_bytes"),
        (10_000 + config_len + 7 + m.len()) as f64
    );
    // Labels never carry raw paths.
    for key in after.keys() {
        if let Some(i) = key.find("route=\"") {
            let route = key[i + 7..].split('"').next().unwrap();
            assert!(
                [
                    "blob",
                    "manifest",
                    "upload",
                    "tags",
                    "catalog",
                    "referrers",
                    "base",
                    "api",
                    "metrics",
                    "other"
                ]
                .contains(&route),
                "{key}"
            );
        }
    }
}

/// What a webhook receiver got: path, headers, body, whether it answered 200.
type Deliveries = Arc<std::sync::Mutex<Vec<(String, axum::http::HeaderMap, Value, bool)>>>;

/// A webhook receiver on a loopback port: answers 500 to its first `fail_first` requests,
/// then 200, recording every request.
async fn receiver(fail_first: usize) -> (u16, Deliveries) {
    use axum::extract::State;
    use axum::http::{HeaderMap, Uri};
    let got: Deliveries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    async fn handle(
        State((got, count, fail_first)): State<(Deliveries, Arc<AtomicUsize>, usize)>,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::http::StatusCode {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let ok = count.fetch_add(1, Ordering::SeqCst) >= fail_first;
        got.lock()
            .unwrap()
            .push((uri.path().to_string(), headers, v, ok));
        if ok {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        }
    }
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::post(handle))
        .with_state((got.clone(), count, fail_first));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, got)
}

/// Every event delivered to `path` with a 2xx, waiting until `pred` holds (10 s at most).
async fn wait_events(got: &Deliveries, path: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<Value> = {
            let all = got.lock().unwrap();
            // The first delivery to /hook failed; the same events come again later.
            let mut seen = std::collections::HashSet::new();
            all.iter()
                .filter(|(p, _, _, ok)| p == path && *ok)
                .flat_map(|(_, _, v, _)| v["events"].as_array().cloned().unwrap_or_default())
                .filter(|e| seen.insert(e["id"].as_str().unwrap_or("").to_string()))
                .collect()
        };
        if pred(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "webhook events at {path} not as expected: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhooks_deliver_push_and_delete_events_with_retries() {
    let (port, got) = receiver(1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("registry.yaml");
    std::fs::write(
        &config,
        format!(
            "notifications:
  endpoints:
    - name: main
      url: http://127.0.0.1:{port}/hook
      headers:
        Authorization: [Bearer s3cret]
      timeout: 2s
      threshold: 4
      backoff: 100ms
    - name: deletes-only
      url: http://127.0.0.1:{port}/deletes
      events: [delete]
      backoff: 100ms
    - name: off
      url: http://127.0.0.1:{port}/off
      disabled: true
"
        ),
    )
    .unwrap();
    let s = Server::start_with_env(&[("REGISTRY_CONFIG", config.to_str().unwrap())]).await;

    let (m, d) = s.push_image("hooks/app", "v1", b"layer").await;
    let push = wait_events(&got, "/hook", |e| !e.is_empty()).await;
    let e = &push[0];
    assert_eq!(e["action"], "push");
    assert_eq!(e["target"]["repository"], "hooks/app");
    assert_eq!(e["target"]["digest"], d.to_string());
    assert_eq!(e["target"]["mediaType"], OCI_MANIFEST);
    assert_eq!(e["target"]["size"], m.len());
    assert_eq!(e["target"]["length"], m.len());
    assert_eq!(e["target"]["tag"], "v1");
    assert_eq!(
        e["target"]["url"],
        format!("http://127.0.0.1:{}/v2/hooks/app/manifests/{d}", s.port)
    );
    assert_eq!(e["request"]["method"], "PUT");
    assert_eq!(e["request"]["host"], format!("127.0.0.1:{}", s.port));
    assert!(
        e["request"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(!e["request"]["id"].as_str().unwrap().is_empty());
    assert!(!e["source"]["instanceID"].as_str().unwrap().is_empty());
    assert!(!e["id"].as_str().unwrap().is_empty());
    assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    {
        // The first attempt got a 500, the retry carried the same event.
        let all = got.lock().unwrap();
        let hook: Vec<_> = all.iter().filter(|(p, ..)| p == "/hook").collect();
        assert_eq!(hook.len(), 2, "one failed attempt, one retry");
        assert!(!hook[0].3 && hook[1].3);
        assert_eq!(hook[0].2["events"][0]["id"], hook[1].2["events"][0]["id"]);
        for (_, headers, ..) in &hook {
            assert_eq!(
                headers["content-type"],
                "application/vnd.docker.distribution.events.v1+json"
            );
            assert_eq!(headers["authorization"], "Bearer s3cret");
        }
        assert!(all.iter().all(|(p, ..)| p != "/off"));
        assert!(
            all.iter().all(|(p, ..)| p != "/deletes"),
            "pushes are filtered out"
        );
    }

    // Deletes through /v2 and through the management API.
    s.push_image("hooks/app", "v2", b"layer two").await;
    let r = s
        .req(Method::DELETE, "/v2/hooks/app/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s
        .req(Method::DELETE, "/api/v1/registry/tags/hooks/app:v1")
        .header("user-agent", "mgmt-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .req(Method::DELETE, "/api/v1/registry/images/hooks/app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    for path in ["/hook", "/deletes"] {
        let events = wait_events(&got, path, |e| {
            e.iter().filter(|e| e["action"] == "delete").count() == 3
        })
        .await;
        let deletes: Vec<&Value> = events.iter().filter(|e| e["action"] == "delete").collect();
        // /v2 tag delete: the tag.
        assert_eq!(deletes[0]["target"]["tag"], "v2");
        assert_eq!(deletes[0]["request"]["method"], "DELETE");
        // Management tag delete: tag and digest.
        assert_eq!(deletes[1]["target"]["tag"], "v1");
        assert_eq!(deletes[1]["target"]["digest"], d.to_string());
        assert_eq!(deletes[1]["request"]["useragent"], "mgmt-test");
        // Repository delete: the repository alone.
        assert_eq!(deletes[2]["target"]["repository"], "hooks/app");
        assert!(deletes[2]["target"]["digest"].is_null());
        if path == "/deletes" {
            assert!(events.iter().all(|e| e["action"] == "delete"));
        }
    }

    // Two pushes and three deletes delivered to "main", after one failed attempt.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&s).await;
        let failed = sample(
            &m,
            r#"hyperregistry_notifications_total{endpoint="main",outcome="failed"}"#,
        );
        let delivered = sample(
            &m,
            r#"hyperregistry_notifications_total{endpoint="main",outcome="delivered"}"#,
        );
        if delivered == 5.0 {
            assert_eq!(failed, 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "delivered {delivered}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhook_failures_never_fail_registry_requests() {
    // An endpoint that always fails, with a one-event queue: pushes still succeed, failed
    // deliveries are dropped after the threshold, and overflow is dropped at once.
    let (port, got) = receiver(usize::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("registry.yaml");
    std::fs::write(
        &config,
        format!(
            "notifications:
  endpoints:
    - name: broken
      url: http://127.0.0.1:{port}/hook
      threshold: 2
      backoff: 300ms
      queuesize: 1
"
        ),
    )
    .unwrap();
    let s = Server::start_with_env(&[("REGISTRY_CONFIG", config.to_str().unwrap())]).await;
    for i in 0..5 {
        s.push_image(
            "drop/app",
            &format!("v{i}"),
            format!("layer {i}").as_bytes(),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&s).await;
        let failed = sample(
            &m,
            r#"hyperregistry_notifications_total{endpoint="broken",outcome="failed"}"#,
        );
        let dropped = sample(
            &m,
            r#"hyperregistry_notifications_total{endpoint="broken",outcome="dropped"}"#,
        );
        if dropped >= 5.0 {
            assert!(failed >= 2.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not dropped: failed {failed}, dropped {dropped}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!got.lock().unwrap().is_empty(), "deliveries were attempted");
    let (status, _, _) = get_json(&s, "/api/v1/registry/tags/drop/app:v4").await;
    assert_eq!(status, StatusCode::OK);
}
