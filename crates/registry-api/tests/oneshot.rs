//! The /v2 router in process, one request at a time (`tower::ServiceExt::oneshot`), over the
//! embedded stores: the HTTP side of the cases that need no real client.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use oci_core::Digest;
use registry_api::{AppState, Policy};
use registry_core::Registry;
use registry_meta::SqliteMeta;
use registry_storage::FsBlobStore;
use tower::ServiceExt;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &[u8] = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
const LAYER: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

struct Api {
    _dir: tempfile::TempDir,
    router: Router,
}

async fn api(policy: Policy) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(FsBlobStore::open(dir.path()).unwrap());
    let meta = Arc::new(SqliteMeta::open(&dir.path().join("m.db")).await.unwrap());
    let state = AppState::new(Registry::new(blobs, meta), policy);
    Api {
        _dir: dir,
        router: registry_api::router(state),
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    /// The first error code of a spec error body.
    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an error body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        });
        v["errors"][0]["code"].as_str().unwrap().to_string()
    }
}

impl Api {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let a = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{:?}",
            String::from_utf8_lossy(&a.body)
        );
        d
    }

    async fn push_image(&self, repo: &str, tag: &str) -> (Digest, Vec<u8>) {
        let config = self.push_blob(repo, CONFIG).await;
        let layer = self.push_blob(repo, LAYER).await;
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": CONFIG.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": LAYER.len()}],
        })
        .to_string()
        .into_bytes();
        let a = self
            .call(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("content-type", OCI_MANIFEST)],
                m.clone(),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{:?}",
            String::from_utf8_lossy(&a.body)
        );
        let digest = Digest::sha256_of(&m);
        assert_eq!(a.header("docker-content-digest"), digest.to_string());
        assert_eq!(
            a.header("location"),
            format!("/v2/{repo}/manifests/{digest}")
        );
        (digest, m)
    }
}

#[tokio::test]
async fn the_base_endpoint_answers_with_the_api_version() {
    let api = api(Policy::default()).await;
    let a = api.call(Method::GET, "/v2/", &[], vec![]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("docker-distribution-api-version"), "registry/2.0");
    assert!(!a.header("x-request-id").is_empty());
}

#[tokio::test]
async fn a_pushed_manifest_is_served_with_negotiation_and_head_has_no_body() {
    let api = api(Policy::default()).await;
    let (digest, m) = api.push_image("team/app", "v1").await;
    let a = api
        .call(
            Method::GET,
            "/v2/team/app/manifests/v1",
            &[("accept", OCI_MANIFEST)],
            vec![],
        )
        .await;
    assert_eq!((a.status, a.body.clone()), (StatusCode::OK, m.clone()));
    assert_eq!(a.header("content-type"), OCI_MANIFEST);
    let a = api
        .call(
            Method::HEAD,
            &format!("/v2/team/app/manifests/{digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.is_empty());
    assert_eq!(a.header("content-length"), m.len().to_string());
    let a = api
        .call(
            Method::GET,
            "/v2/team/app/manifests/v1",
            &[(
                "accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
            vec![],
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    let a = api
        .call(Method::HEAD, "/v2/team/app/manifests/nope", &[], vec![])
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.is_empty(), "HEAD errors carry no body");
    let a = api
        .call(Method::GET, "/v2/team/app/tags/list", &[], vec![])
        .await;
    let tags: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        tags,
        serde_json::json!({"name": "team/app", "tags": ["v1"]})
    );
}

#[tokio::test]
async fn refusals_come_in_the_spec_error_format() {
    let api = api(Policy::default()).await;
    let cases = [
        (
            Method::GET,
            "/v2/team/app/tags/list",
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/Team/app/tags/list",
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/team/app/blobs/sha256:zz",
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            Method::PATCH,
            "/v2/team/app/blobs/uploads/no-such-session",
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            Method::POST,
            "/v2/team/app/manifests/v1",
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
    ];
    for (method, uri, status, code) in cases {
        let a = api.call(method.clone(), uri, &[], vec![]).await;
        assert_eq!(
            (a.status, a.code()),
            (status, code.to_string()),
            "{method} {uri}"
        );
        assert_eq!(
            a.header("content-type"),
            "application/json",
            "{method} {uri}"
        );
    }
    let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
    let a = api
        .call(
            Method::PUT,
            "/v2/team/app/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            m.to_vec(),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let bad = Digest::sha256_of(b"other");
    let a = api
        .call(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={bad}"),
            &[],
            b"bytes".to_vec(),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
}

#[tokio::test]
async fn chunked_uploads_report_progress_and_ranges_are_served() {
    let api = api(Policy::default()).await;
    let a = api
        .call(Method::POST, "/v2/team/app/blobs/uploads/", &[], vec![])
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let location = a.header("location").to_string();
    let a = api
        .call(
            Method::PATCH,
            &location,
            &[("content-range", "0-9"), ("content-length", "10")],
            LAYER[..10].to_vec(),
        )
        .await;
    assert_eq!((a.status, a.header("range")), (StatusCode::ACCEPTED, "0-9"));
    let a = api
        .call(
            Method::PATCH,
            &location,
            &[("content-range", "5-9"), ("content-length", "5")],
            LAYER[5..10].to_vec(),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID".into())
    );
    let a = api.call(Method::GET, &location, &[], vec![]).await;
    assert_eq!(
        (a.status, a.header("range")),
        (StatusCode::NO_CONTENT, "0-9")
    );
    let digest = Digest::sha256_of(LAYER);
    let a = api
        .call(
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[],
            LAYER[10..].to_vec(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let blob = format!("/v2/team/app/blobs/{digest}");
    let a = api
        .call(Method::GET, &blob, &[("range", "bytes=2-4")], vec![])
        .await;
    assert_eq!(
        (a.status, a.body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &LAYER[2..5])
    );
    assert_eq!(
        a.header("content-range"),
        format!("bytes 2-4/{}", LAYER.len())
    );
    let a = api
        .call(Method::GET, &blob, &[("range", "bytes=0-1,30-31")], vec![])
        .await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert!(
        a.header("content-type")
            .starts_with("multipart/byteranges; boundary=")
    );
    let text = String::from_utf8_lossy(&a.body);
    assert!(
        text.contains("Content-Range: bytes 0-1/36\r\n\r\n01")
            && text.contains("Content-Range: bytes 30-31/36\r\n\r\nuv"),
        "{text}"
    );
    let a = api
        .call(Method::GET, &blob, &[("range", "bytes=99-")], vec![])
        .await;
    assert_eq!(
        (a.status, a.header("content-range")),
        (StatusCode::RANGE_NOT_SATISFIABLE, "bytes */36")
    );
}

#[tokio::test]
async fn policy_refuses_writes_when_read_only_and_deletes_when_disabled() {
    let read_only = api(Policy {
        read_only: true,
        ..Policy::default()
    })
    .await;
    let a = read_only
        .call(Method::POST, "/v2/team/app/blobs/uploads/", &[], vec![])
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    let no_delete = api(Policy {
        delete_enabled: false,
        ..Policy::default()
    })
    .await;
    let (digest, _) = no_delete.push_image("team/app", "v1").await;
    let a = no_delete
        .call(
            Method::DELETE,
            &format!("/v2/team/app/manifests/{digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED".into())
    );
    let a = no_delete
        .call(Method::GET, "/v2/team/app/manifests/v1", &[], vec![])
        .await;
    assert_eq!(a.status, StatusCode::OK, "nothing was deleted");
}

#[tokio::test]
async fn deleting_a_tag_leaves_the_digest_and_deleting_the_digest_takes_the_rest() {
    let api = api(Policy::default()).await;
    let (digest, _) = api.push_image("team/app", "v1").await;
    assert_eq!(
        api.call(Method::DELETE, "/v2/team/app/manifests/v1", &[], vec![])
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let a = api
        .call(Method::GET, "/v2/team/app/manifests/v1", &[], vec![])
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let by_digest = format!("/v2/team/app/manifests/{digest}");
    assert_eq!(
        api.call(Method::GET, &by_digest, &[], vec![]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.call(Method::DELETE, &by_digest, &[], vec![])
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let a = api.call(Method::GET, &by_digest, &[], vec![]).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    let layer = Digest::sha256_of(LAYER);
    assert_eq!(
        api.call(
            Method::DELETE,
            &format!("/v2/team/app/blobs/{layer}"),
            &[],
            vec![]
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    let a = api
        .call(
            Method::HEAD,
            &format!("/v2/team/app/blobs/{layer}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}
