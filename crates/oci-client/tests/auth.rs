//! The bearer-token flow, Basic auth, token caching and retries against a mock registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use oci_client::{
    ClientConfig, ClientError, Credential, CredentialStore, Reference, RegistryClient,
};

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

#[derive(Clone, Default)]
struct Mock {
    port: u16,
    token_requests: Arc<AtomicUsize>,
    flaky_hits: Arc<AtomicUsize>,
    last_scope: Arc<parking_lot::Mutex<String>>,
}

fn challenge(m: &Mock, scope: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            format!(
                r#"Bearer realm="http://127.0.0.1:{}/token",service="mock",scope="{scope}""#,
                m.port
            ),
        )],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
        .into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some("Bearer good-token")
}

async fn token(
    State(m): State<Mock>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    m.token_requests.fetch_add(1, Ordering::SeqCst);
    *m.last_scope.lock() = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    // base64("alice:pw")
    if h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some("Basic YWxpY2U6cHc=") {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    axum::Json(serde_json::json!({"token": "good-token"})).into_response()
}

async fn manifest(State(m): State<Mock>, h: HeaderMap) -> Response {
    if !authorized(&h) {
        return challenge(&m, "repository:team/app:pull");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/vnd.oci.image.manifest.v1+json",
        )],
        MANIFEST,
    )
        .into_response()
}

async fn flaky(State(m): State<Mock>) -> Response {
    if m.flaky_hits.fetch_add(1, Ordering::SeqCst) < 2 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "0")],
            "slow down",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/vnd.oci.image.manifest.v1+json",
        )],
        MANIFEST,
    )
        .into_response()
}

async fn start() -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = Mock {
        port: listener.local_addr().unwrap().port(),
        ..Mock::default()
    };
    let app = Router::new()
        .route("/token", get(token))
        .route("/v2/team/app/manifests/{r}", get(manifest))
        .route("/v2/flaky/manifests/{r}", get(flaky))
        .with_state(mock.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    mock
}

fn client(credential: Option<Credential>) -> RegistryClient {
    let dir = std::env::temp_dir().join(format!("no-such-authfile-{}", std::process::id()));
    RegistryClient::new(ClientConfig {
        credentials: CredentialStore::single(dir.join("auth.json")),
        explicit: credential,
        base_delay: std::time::Duration::from_millis(10),
        ..ClientConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn bearer_token_flow_fetches_once_per_scope() {
    let m = start().await;
    let c = client(Some(Credential::Basic {
        username: "alice".into(),
        password: "pw".into(),
    }));
    let r: Reference = format!("127.0.0.1:{}/team/app:1", m.port).parse().unwrap();
    let (body, mt, digest) = c.get_manifest(&r).await.unwrap();
    assert_eq!(&body[..], MANIFEST.as_bytes());
    assert_eq!(mt, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(digest, oci_core::Digest::sha256_of(MANIFEST.as_bytes()));
    assert_eq!(m.token_requests.load(Ordering::SeqCst), 1);
    assert_eq!(*m.last_scope.lock(), "repository:team/app:pull");
    // Cached: no second token request.
    c.get_manifest(&r).await.unwrap();
    assert_eq!(m.token_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_unauthorized() {
    let m = start().await;
    let r: Reference = format!("127.0.0.1:{}/team/app:1", m.port).parse().unwrap();
    let bad = client(Some(Credential::Basic {
        username: "alice".into(),
        password: "nope".into(),
    }));
    let err = bad.get_manifest(&r).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    assert!(
        !err.to_string().contains("nope"),
        "the password never shows: {err}"
    );
    let anonymous = client(None);
    assert!(matches!(
        anonymous.get_manifest(&r).await.unwrap_err(),
        ClientError::Unauthorized { .. }
    ));
}

#[tokio::test]
async fn retries_429_with_retry_after() {
    let m = start().await;
    let r: Reference = format!("127.0.0.1:{}/flaky:1", m.port).parse().unwrap();
    let c = client(None);
    c.get_manifest(&r).await.unwrap();
    assert_eq!(m.flaky_hits.load(Ordering::SeqCst), 3);
}
