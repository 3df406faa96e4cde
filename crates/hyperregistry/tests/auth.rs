//! Authentication and authorization against the real hyperregistry binary: Basic auth and
//! the Docker token service, a permission matrix checked cell by cell over HTTP, docker,
//! podman and skopeo logging in, throttling, token forgery and expiry, and logs free of
//! secrets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_core::Digest;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use test_support::{busybox_layout, ensure_dockerd, free_port, podman, require_tool, sh};

const USERS: [(&str, &str); 5] = [
    ("alice", "alice-secret-pw-1"),
    ("bob", "bob-secret-pw-2"),
    ("carol", "carol-secret-pw-3"),
    ("dave", "dave-secret-pw-4"),
    ("root", "root-secret-pw-0"),
];
const SERVICE: &str = "hyper-test-service";
const ISSUER: &str = "hyper-test-issuer";
const REALM: &str = "hyper-test";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).unwrap().1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Basic,
    Token,
}

/// Who makes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anon,
    User(&'static str),
}

/// `k=v&...`, form-encoded.
fn qs(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The `auth` block the tests use: four users plus an admin, one user's rights via a
/// group, five repository rules, anonymous pull of `public/**`.
fn auth_yaml(htpasswd: &Path, mode: Mode, maxfailures: u32, backoff: u64) -> String {
    let token = match mode {
        Mode::Token => format!("  token:\n    service: {SERVICE}\n    issuer: {ISSUER}\n"),
        Mode::Basic => String::new(),
    };
    format!(
        r#"auth:
  htpasswd:
    realm: {REALM}
    path: {htpasswd}
{token}  groups:
    devs: [bob]
  access:
    - repositories: ["team/*"]
      users: [alice]
      actions: [pull, push]
    - repositories: ["team/*"]
      users: [dave]
      actions: [pull]
    - repositories: ["team/**"]
      groups: [devs]
      actions: ["*"]
    - repositories: ["shared/**"]
      users: [alice, bob, carol]
      actions: [pull]
    - repositories: ["carol/*"]
      users: [carol]
      actions: [pull, push, delete]
  anonymous:
    pull: ["public/**"]
  admins:
    users: [root]
  throttle:
    maxfailures: {maxfailures}
    window: 60
    backoff: {backoff}
"#,
        htpasswd = htpasswd.display()
    )
}

/// A hyperregistry process with auth on, its config, data and log files.
struct Reg {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    mode: Mode,
    client: Client,
    rust_log: String,
}

impl Reg {
    async fn start(mode: Mode) -> Reg {
        Reg::start_with(mode, 100, 60, "warn").await
    }

    async fn start_with(mode: Mode, maxfailures: u32, backoff: u64, rust_log: &str) -> Reg {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let lines: String = USERS
            .iter()
            .map(|(u, p)| {
                let h = bcrypt::hash_with_result(p, 4)
                    .unwrap()
                    .format_for_version(bcrypt::Version::TwoY);
                format!("{u}:{h}\n")
            })
            .collect();
        std::fs::write(&htpasswd, lines).unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            auth_yaml(&htpasswd, mode, maxfailures, backoff),
        )
        .unwrap();
        let mut reg = Reg {
            child: None,
            port: free_port(),
            dir,
            mode,
            client: Client::new(),
            rust_log: rust_log.to_string(),
        };
        reg.spawn().await;
        reg
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hyperregistry"))
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", self.root())
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn hyperregistry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.url("/v2/")).send().await
                && r.status() == StatusCode::UNAUTHORIZED
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "hyperregistry exited early: {status}\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "hyperregistry did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn restart(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
        self.spawn().await;
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A token from `GET /token` for these scopes: (token, the raw JSON answer).
    async fn token(&self, who: Who, scopes: &[&str]) -> (String, serde_json::Value) {
        let mut q: Vec<(&str, &str)> = vec![("service", SERVICE)];
        for s in scopes {
            q.push(("scope", s));
        }
        let mut rb = self.req(Method::GET, &format!("/token?{}", qs(&q)));
        if let Who::User(u) = who {
            rb = rb.basic_auth(u, Some(password(u)));
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "token for {who:?}");
        let v: serde_json::Value = r.json().await.unwrap();
        (v["token"].as_str().unwrap().to_string(), v)
    }

    /// `POST /token` with the OAuth2 password grant for `user`, plus `extra` form fields.
    fn password_grant(&self, user: &str, pw: &str, extra: &[(&str, &str)]) -> RequestBuilder {
        let mut form = vec![
            ("grant_type", "password"),
            ("service", SERVICE),
            ("client_id", "test"),
            ("username", user),
            ("password", pw),
        ];
        form.extend_from_slice(extra);
        self.req(Method::POST, "/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(qs(&form))
    }

    /// A request as `who` on `repo`: Basic credentials, or a token asking for everything on
    /// `repo` (the token service grants what the rules allow).
    async fn as_who(&self, who: Who, method: Method, path: &str, repo: &str) -> RequestBuilder {
        let rb = self.req(method, path);
        match (self.mode, who) {
            (Mode::Basic, Who::Anon) => rb,
            (Mode::Basic, Who::User(u)) => rb.basic_auth(u, Some(password(u))),
            (Mode::Token, _) => {
                let scope = format!("repository:{repo}:pull,push,delete");
                let (t, _) = self.token(who, &[&scope]).await;
                rb.bearer_auth(t)
            }
        }
    }

    /// The admin's view, with Basic credentials or a token.
    async fn admin(&self, method: Method, path: &str, repo: &str) -> RequestBuilder {
        self.as_who(Who::User("root"), method, path, repo).await
    }

    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self
            .admin(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                repo,
            )
            .await
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "admin push blob to {repo}");
        d
    }

    async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) {
        let r = self
            .admin(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                repo,
            )
            .await
            .header("content-type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "admin put manifest");
    }

    /// What the admin sees at `GET /v2/<repo>/manifests/<reference>`: its digest, if any.
    async fn manifest_digest(&self, repo: &str, reference: &str) -> Option<String> {
        let r = self
            .admin(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                repo,
            )
            .await
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => Some(header(&r, "docker-content-digest")),
            StatusCode::NOT_FOUND => None,
            s => panic!("admin manifest GET: {s}"),
        }
    }

    async fn blob_present(&self, repo: &str, d: &Digest) -> bool {
        let r = self
            .admin(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"), repo)
            .await
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => true,
            StatusCode::NOT_FOUND => false,
            s => panic!("admin blob HEAD: {s}"),
        }
    }

    fn upload_files(&self) -> usize {
        std::fs::read_dir(self.root().join("uploads"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap()
    }
}

impl Drop for Reg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A small OCI image manifest; `note` makes its digest unique.
fn manifest(
    config: &Digest,
    config_len: usize,
    layer: &Digest,
    layer_len: usize,
    note: &str,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": layer_len}],
        "annotations": {"note": note},
    }))
    .unwrap()
}

/// The `access` claim of a JWT, as (type:name, sorted actions).
fn token_access(token: &str) -> Vec<(String, Vec<String>)> {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut actions: Vec<String> = e["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            actions.sort();
            (
                format!(
                    "{}:{}",
                    e["type"].as_str().unwrap(),
                    e["name"].as_str().unwrap()
                ),
                actions,
            )
        })
        .collect()
}

/// Assert the refusal a denied request must get, by mode and caller: Basic anonymous →
/// 401 UNAUTHORIZED + Basic challenge; Basic user → 403 DENIED; token → 401 UNAUTHORIZED +
/// Bearer challenge naming the scope, with `error="insufficient_scope"`.
async fn assert_denied(reg: &Reg, who: Who, r: Response, repo: &str, what: &str) {
    let status = r.status();
    let challenge = header(&r, "www-authenticate");
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let code = body["errors"][0]["code"].as_str().unwrap_or("").to_string();
    match (reg.mode, who) {
        (Mode::Basic, Who::Anon) => {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
            assert_eq!(code, "UNAUTHORIZED", "{what}");
            assert!(
                challenge.starts_with(&format!("Basic realm=\"{REALM}\"")),
                "{what}: {challenge}"
            );
        }
        (Mode::Basic, Who::User(_)) => {
            assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
            assert_eq!(code, "DENIED", "{what}");
        }
        (Mode::Token, _) => {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
            assert_eq!(code, "UNAUTHORIZED", "{what}");
            let prefix = format!(
                "Bearer realm=\"http://{}/token\",service=\"{SERVICE}\",scope=\"repository:{repo}:",
                reg.host()
            );
            assert!(challenge.starts_with(&prefix), "{what}: {challenge}");
            assert!(
                challenge.ends_with(",error=\"insufficient_scope\""),
                "{what}: {challenge}"
            );
        }
    }
}

/// (pull, push, delete) that the test configuration gives `who` on `repo`.
fn expected(who: Who, repo: &str) -> [bool; 3] {
    let public = repo.starts_with("public/");
    match (who, repo) {
        (Who::User("root"), _) => [true; 3],
        (Who::User("alice"), "team/app") => [true, true, false],
        (Who::User("bob"), "team/app") => [true, true, true],
        (Who::User("carol"), "carol/x") => [true, true, true],
        (Who::User(_), "shared/lib") => [true, false, false],
        (Who::User(_), _) => [public, false, false],
        (Who::Anon, _) => [public, false, false],
    }
}

const REPOS: [&str; 4] = ["team/app", "shared/lib", "carol/x", "public/base"];
const CALLERS: [Who; 5] = [
    Who::User("alice"),
    Who::User("bob"),
    Who::User("carol"),
    Who::Anon,
    Who::User("root"),
];

struct Seeded {
    config: (Digest, usize),
    layer: (Digest, usize),
    m1: Vec<u8>,
    m1_digest: String,
}

async fn seed(reg: &Reg, repo: &str) -> Seeded {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = format!("layer of {repo}").into_bytes();
    let cd = reg.push_blob(repo, &config).await;
    let ld = reg.push_blob(repo, &layer).await;
    let m1 = manifest(&cd, config.len(), &ld, layer.len(), "m1");
    reg.put_manifest(repo, "v1", &m1).await;
    Seeded {
        config: (cd, config.len()),
        layer: (ld, layer.len()),
        m1_digest: Digest::sha256_of(&m1).to_string(),
        m1,
    }
}

/// Every (caller, repository, action) cell, with real requests; denied writes change
/// nothing.
async fn permission_matrix(mode: Mode) {
    let reg = Reg::start(mode).await;
    let mut seeded = Vec::new();
    for repo in REPOS {
        seeded.push(seed(&reg, repo).await);
    }
    for who in CALLERS {
        for (repo, s) in REPOS.iter().zip(&seeded) {
            let repo = *repo;
            let [pull, push, delete] = expected(who, repo);
            let cell = format!("{mode:?} {who:?} {repo}");

            // The token grants exactly the allowed subset of pull,push,delete.
            if mode == Mode::Token {
                let scope = format!("repository:{repo}:pull,push,delete");
                let (t, _) = reg.token(who, &[&scope]).await;
                let mut want: Vec<String> = Vec::new();
                for (ok, a) in [(delete, "delete"), (pull, "pull"), (push, "push")] {
                    if ok {
                        want.push(a.into());
                    }
                }
                let got = token_access(&t);
                if want.is_empty() {
                    assert!(got.is_empty(), "{cell}: token grants {got:?}");
                } else {
                    assert_eq!(got, vec![(format!("repository:{repo}"), want)], "{cell}");
                }
            }

            // pull: manifest, blob, tags list.
            for path in [
                format!("/v2/{repo}/manifests/v1"),
                format!("/v2/{repo}/blobs/{}", s.layer.0),
                format!("/v2/{repo}/tags/list"),
            ] {
                let r = reg
                    .as_who(who, Method::GET, &path, repo)
                    .await
                    .header("accept", OCI_MANIFEST)
                    .send()
                    .await
                    .unwrap();
                if pull {
                    assert_eq!(r.status(), StatusCode::OK, "{cell} GET {path}");
                } else {
                    assert_denied(&reg, who, r, repo, &format!("{cell} GET {path}")).await;
                }
            }
            let r = reg
                .as_who(who, Method::HEAD, &format!("/v2/{repo}/manifests/v1"), repo)
                .await
                .send()
                .await
                .unwrap();
            if pull {
                assert_eq!(r.status(), StatusCode::OK, "{cell} HEAD");
                assert_eq!(header(&r, "docker-content-digest"), s.m1_digest);
            } else {
                assert!(
                    matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                    "{cell} HEAD: {}",
                    r.status()
                );
                assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");
            }

            // push: a monolithic blob, an upload session, a manifest over the tag.
            let blob = format!("new blob by {who:?} in {repo}").into_bytes();
            let bd = Digest::sha256_of(&blob);
            let r = reg
                .as_who(
                    who,
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={bd}"),
                    repo,
                )
                .await
                .body(blob.clone())
                .send()
                .await
                .unwrap();
            if push {
                assert_eq!(r.status(), StatusCode::CREATED, "{cell} blob push");
                assert!(reg.blob_present(repo, &bd).await);
            } else {
                assert_denied(&reg, who, r, repo, &format!("{cell} blob push")).await;
                assert!(!reg.blob_present(repo, &bd).await, "{cell}: blob appeared");
                let file = reg
                    .root()
                    .join("blobs/sha256")
                    .join(&bd.hex()[..2])
                    .join(bd.hex());
                assert!(!file.exists(), "{cell}: blob bytes stored");
            }
            let r = reg
                .as_who(
                    who,
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/"),
                    repo,
                )
                .await
                .send()
                .await
                .unwrap();
            if push {
                assert_eq!(r.status(), StatusCode::ACCEPTED, "{cell} session");
                let loc = header(&r, "location");
                let r = reg
                    .as_who(who, Method::DELETE, &loc, repo)
                    .await
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::NO_CONTENT, "{cell} cancel");
            } else {
                assert_denied(&reg, who, r, repo, &format!("{cell} session")).await;
            }
            assert_eq!(reg.upload_files(), 0, "{cell}: an upload session is left");

            let m2 = manifest(
                &s.config.0,
                s.config.1,
                &s.layer.0,
                s.layer.1,
                &format!("{who:?}"),
            );
            let r = reg
                .as_who(who, Method::PUT, &format!("/v2/{repo}/manifests/v1"), repo)
                .await
                .header("content-type", OCI_MANIFEST)
                .body(m2.clone())
                .send()
                .await
                .unwrap();
            if push {
                assert_eq!(r.status(), StatusCode::CREATED, "{cell} manifest push");
                assert_eq!(
                    reg.manifest_digest(repo, "v1").await.unwrap(),
                    Digest::sha256_of(&m2).to_string()
                );
                reg.put_manifest(repo, "v1", &s.m1).await;
            } else {
                assert_denied(&reg, who, r, repo, &format!("{cell} manifest push")).await;
                assert_eq!(
                    reg.manifest_digest(repo, "v1").await.unwrap(),
                    s.m1_digest,
                    "{cell}: the tag moved"
                );
                assert_eq!(
                    reg.manifest_digest(repo, &Digest::sha256_of(&m2).to_string())
                        .await,
                    None,
                    "{cell}: the manifest was stored"
                );
            }

            // delete: a manifest by digest, then a blob.
            let victim = manifest(
                &s.config.0,
                s.config.1,
                &s.layer.0,
                s.layer.1,
                &format!("victim of {who:?}"),
            );
            let vd = Digest::sha256_of(&victim).to_string();
            reg.put_manifest(repo, &vd, &victim).await;
            let r = reg
                .as_who(
                    who,
                    Method::DELETE,
                    &format!("/v2/{repo}/manifests/{vd}"),
                    repo,
                )
                .await
                .send()
                .await
                .unwrap();
            if delete {
                assert_eq!(r.status(), StatusCode::ACCEPTED, "{cell} manifest delete");
                assert_eq!(reg.manifest_digest(repo, &vd).await, None);
            } else {
                assert_denied(&reg, who, r, repo, &format!("{cell} manifest delete")).await;
                assert_eq!(
                    reg.manifest_digest(repo, &vd).await.as_deref(),
                    Some(vd.as_str()),
                    "{cell}: the manifest went"
                );
            }
            let r = reg
                .as_who(
                    who,
                    Method::DELETE,
                    &format!("/v2/{repo}/blobs/{}", s.layer.0),
                    repo,
                )
                .await
                .send()
                .await
                .unwrap();
            if delete {
                assert_eq!(r.status(), StatusCode::ACCEPTED, "{cell} blob delete");
                assert!(!reg.blob_present(repo, &s.layer.0).await);
                // Put it back for the next caller.
                reg.push_blob(repo, format!("layer of {repo}").as_bytes())
                    .await;
            } else {
                assert_denied(&reg, who, r, repo, &format!("{cell} blob delete")).await;
                assert!(
                    reg.blob_present(repo, &s.layer.0).await,
                    "{cell}: the blob went"
                );
            }
        }
    }
}

#[tokio::test]
async fn permission_matrix_with_basic_auth() {
    permission_matrix(Mode::Basic).await;
}

#[tokio::test]
async fn permission_matrix_with_tokens() {
    permission_matrix(Mode::Token).await;
}

/// The roles of the endpoint matrix, each seen from repository `team/app`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Anonymous,
    /// dave: pull on `team/*`.
    Reader,
    /// alice: pull and push on `team/*`, pull on `shared/**`.
    Writer,
    /// bob: every action on `team/**` (through the `devs` group).
    RepoAdmin,
    /// root: a registry administrator.
    RegistryAdmin,
    /// root's token for `repository:team/app:pull` alone (token auth only).
    NarrowToken,
}

const ROLES: [Role; 6] = [
    Role::Anonymous,
    Role::Reader,
    Role::Writer,
    Role::RepoAdmin,
    Role::RegistryAdmin,
    Role::NarrowToken,
];

impl Role {
    fn user(self) -> Option<&'static str> {
        match self {
            Role::Anonymous => None,
            Role::Reader => Some("dave"),
            Role::Writer => Some("alice"),
            Role::RepoAdmin => Some("bob"),
            Role::RegistryAdmin | Role::NarrowToken => Some("root"),
        }
    }
}

/// A matrix cell that expects the refusal of its mode: 401 for anyone without credentials
/// and for every bearer token, 403 for a Basic user without the right.
const D: u16 = 0;

/// What a matrix row sends.
#[derive(Clone, Copy)]
enum Body {
    None,
    /// The `team/app:v1` manifest, again.
    Manifest,
    /// The matrix blob.
    Blob,
    /// JSON; `{n}` becomes a number unique to the cell.
    Json(&'static str),
    /// The OAuth2 password grant with the role's own credentials.
    PasswordGrant,
    /// No body; the role's credentials as Basic in either mode, as a client logging in
    /// to the token service sends them.
    BasicLogin,
}

/// One endpoint of the matrix: the request, and the status expected for each of
/// [`ROLES`], on Basic auth and, where it differs, on token auth.
struct Row {
    method: Method,
    /// Placeholders: `{m1}` `{layer}` the seeded manifest and layer, `{victim}` a manifest
    /// and `{vblob}` a blob made for the cell, `{upload}` a fresh upload session,
    /// `{shared}` a layer of `shared/lib`, `{blob}` the matrix blob's digest, `{extvictim}`
    /// an external registry and `{rule}` a replication rule made for the cell.
    path: &'static str,
    body: Body,
    basic: [u16; 6],
    token: Option<[u16; 6]>,
}

fn rows() -> Vec<Row> {
    fn row(method: Method, path: &'static str, body: Body, basic: [u16; 6]) -> Row {
        Row {
            method,
            path,
            body,
            basic,
            token: None,
        }
    }
    let pull = [D, 200, 200, 200, 200, 200];
    let admin = |ok: u16| [D, D, D, D, ok, D];
    let open = [200; 6];
    let g = Method::GET;
    vec![
        Row {
            token: Some([200, 200, 200, 200, 200, 200]),
            ..row(g.clone(), "/v2/", Body::None, [D, 200, 200, 200, 200, 200])
        },
        Row {
            token: Some([200, 200, 200, 200, 200, D]),
            ..row(g.clone(), "/v2/_catalog", Body::None, [200; 6])
        },
        row(g.clone(), "/v2/team/app/tags/list", Body::None, pull),
        row(g.clone(), "/v2/team/app/manifests/v1", Body::None, pull),
        row(Method::HEAD, "/v2/team/app/manifests/v1", Body::None, pull),
        row(
            Method::PUT,
            "/v2/team/app/manifests/v1",
            Body::Manifest,
            [D, D, 201, 201, 201, D],
        ),
        row(
            Method::DELETE,
            "/v2/team/app/manifests/{victim}",
            Body::None,
            [D, D, D, 202, 202, D],
        ),
        row(g.clone(), "/v2/team/app/referrers/{m1}", Body::None, pull),
        row(g.clone(), "/v2/team/app/blobs/{layer}", Body::None, pull),
        row(Method::HEAD, "/v2/team/app/blobs/{layer}", Body::None, pull),
        row(
            Method::DELETE,
            "/v2/team/app/blobs/{vblob}",
            Body::None,
            [D, D, D, 202, 202, D],
        ),
        row(
            Method::POST,
            "/v2/team/app/blobs/uploads/",
            Body::None,
            [D, D, 202, 202, 202, D],
        ),
        row(
            Method::POST,
            "/v2/team/app/blobs/uploads/?digest={blob}",
            Body::Blob,
            [D, D, 201, 201, 201, D],
        ),
        row(
            Method::POST,
            "/v2/team/app/blobs/uploads/?mount={shared}&from=shared/lib",
            Body::None,
            [D, D, 201, 201, 201, D],
        ),
        row(g.clone(), "{upload}", Body::None, [D, D, 204, 204, 204, D]),
        row(
            Method::PATCH,
            "{upload}",
            Body::Blob,
            [D, D, 202, 202, 202, D],
        ),
        row(
            Method::PUT,
            "{upload}?digest={blob}",
            Body::Blob,
            [D, D, 201, 201, 201, D],
        ),
        row(
            Method::DELETE,
            "{upload}",
            Body::None,
            [D, D, 204, 204, 204, D],
        ),
        Row {
            token: Some([200; 6]),
            ..row(
                g.clone(),
                "/token?service=hyper-test-service&scope=repository:team/app:pull",
                Body::BasicLogin,
                [404; 6],
            )
        },
        Row {
            token: Some([401, 200, 200, 200, 200, 200]),
            ..row(Method::POST, "/token", Body::PasswordGrant, [404; 6])
        },
        row(g.clone(), "/api/v1/health", Body::None, open),
        row(g.clone(), "/api/v1/openapi.json", Body::None, open),
        row(g.clone(), "/metrics", Body::None, open),
        row(g.clone(), "/api/v1/registry/images", Body::None, admin(200)),
        row(
            g.clone(),
            "/api/v1/registry/images/team/app",
            Body::None,
            admin(200),
        ),
        row(
            Method::DELETE,
            "/api/v1/registry/images/team/gone",
            Body::None,
            admin(200),
        ),
        row(g.clone(), "/api/v1/registry/tags", Body::None, admin(200)),
        row(
            g.clone(),
            "/api/v1/registry/tags/team/app:v1",
            Body::None,
            admin(200),
        ),
        row(
            Method::DELETE,
            "/api/v1/registry/tags/team/app:victim",
            Body::None,
            admin(200),
        ),
        row(
            g.clone(),
            "/api/v1/registry/external",
            Body::None,
            admin(200),
        ),
        row(
            Method::POST,
            "/api/v1/registry/external",
            Body::Json(r#"{"name":"new-{n}","endpoint":"http://127.0.0.1:1","insecure":true}"#),
            admin(201),
        ),
        row(
            g.clone(),
            "/api/v1/registry/external/ext",
            Body::None,
            admin(200),
        ),
        row(
            Method::PUT,
            "/api/v1/registry/external/ext",
            Body::Json(r#"{"insecure":true}"#),
            admin(200),
        ),
        row(
            Method::DELETE,
            "/api/v1/registry/external/{extvictim}",
            Body::None,
            admin(204),
        ),
        row(
            Method::POST,
            "/api/v1/registry/external/ext/test",
            Body::None,
            admin(200),
        ),
        // The external registry is unreachable: the admin gets as far as the copy (502).
        row(
            Method::POST,
            "/api/v1/replication/push",
            Body::Json(r#"{"registry_id":"ext","repository":"team/app","reference":"v1"}"#),
            admin(502),
        ),
        row(
            Method::POST,
            "/api/v1/replication/pull",
            Body::Json(r#"{"registry_id":"ext","repository":"team/app","reference":"v1"}"#),
            admin(502),
        ),
        row(
            g.clone(),
            "/api/v1/replication/jobs",
            Body::None,
            admin(200),
        ),
        row(
            g.clone(),
            "/api/v1/replication/jobs/no-such-job",
            Body::None,
            admin(404),
        ),
        row(
            g.clone(),
            "/api/v1/replication/rules",
            Body::None,
            admin(200),
        ),
        row(
            Method::POST,
            "/api/v1/replication/rules",
            Body::Json(
                r#"{"name":"rule-{n}","registry_id":"ext","repositories":["team/*"],"tags":[]}"#,
            ),
            admin(201),
        ),
        row(
            Method::DELETE,
            "/api/v1/replication/rules/{rule}",
            Body::None,
            admin(204),
        ),
        row(g, "/api/v1/no-such-endpoint", Body::None, admin(404)),
    ]
}

/// Basic credentials of the registry admin, for setting up a cell.
fn as_root(rb: RequestBuilder) -> RequestBuilder {
    rb.basic_auth("root", Some(password("root")))
}

/// Make what a row's placeholders name, as the admin, and return its path and body.
async fn prepare_cell(reg: &Reg, s: &Seeded, row: &Row, n: usize) -> (String, Vec<u8>) {
    let blob = b"the matrix blob".to_vec();
    let mut path = row.path.to_string();
    if path.contains("{victim}") {
        let victim = manifest(&s.config.0, s.config.1, &s.layer.0, s.layer.1, "victim");
        let vd = Digest::sha256_of(&victim).to_string();
        reg.put_manifest("team/app", &vd, &victim).await;
        path = path.replace("{victim}", &vd);
    }
    if path.contains("{vblob}") {
        path = path.replace(
            "{vblob}",
            &reg.push_blob("team/app", b"victim blob").await.to_string(),
        );
    }
    if path.contains("{upload}") {
        let r = reg
            .admin(Method::POST, "/v2/team/app/blobs/uploads/", "team/app")
            .await
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "admin starts an upload");
        path = path.replace("{upload}", &header(&r, "location"));
    }
    if path.contains("{shared}") {
        path = path.replace(
            "{shared}",
            &reg.push_blob("shared/lib", b"shared layer")
                .await
                .to_string(),
        );
    }
    if path.contains("/images/team/gone") {
        seed(reg, "team/gone").await;
    }
    if path.contains("app:victim") {
        reg.put_manifest("team/app", "victim", &s.m1).await;
    }
    if path.contains("/external/ext") || path.contains("/replication/") {
        let r = as_root(reg.req(Method::GET, "/api/v1/registry/external/ext"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            let r = as_root(reg.req(Method::POST, "/api/v1/registry/external"))
                .header("content-type", "application/json")
                .body(r#"{"name":"ext","endpoint":"http://127.0.0.1:1","insecure":true}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "admin creates ext");
        }
    }
    if path.contains("{extvictim}") {
        let name = format!("victim-{n}");
        let r = as_root(reg.req(Method::POST, "/api/v1/registry/external"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"name":"{name}","endpoint":"http://127.0.0.1:1"}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "admin creates {name}");
        path = path.replace("{extvictim}", &name);
    }
    if path.contains("{rule}") {
        let r = as_root(reg.req(Method::POST, "/api/v1/replication/rules"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"name":"victim-rule-{n}","registry_id":"ext","repositories":["x/*"],"tags":[]}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "admin creates a rule");
        let v: serde_json::Value = r.json().await.unwrap();
        path = path.replace("{rule}", v["id"].as_str().expect("rule id"));
    }
    let path = path
        .replace("{m1}", &s.m1_digest)
        .replace("{layer}", &s.layer.0.to_string())
        .replace("{blob}", &Digest::sha256_of(&blob).to_string());
    let body = match row.body {
        Body::None | Body::PasswordGrant | Body::BasicLogin => Vec::new(),
        Body::Manifest => s.m1.clone(),
        Body::Blob => blob,
        Body::Json(j) => j.replace("{n}", &n.to_string()).into_bytes(),
    };
    (path, body)
}

/// How `role` authenticates a request in `mode`: nothing, Basic, or its bearer token.
async fn with_role(reg: &Reg, role: Role, rb: RequestBuilder) -> RequestBuilder {
    match (reg.mode, role.user()) {
        (Mode::Basic, None) => rb,
        (Mode::Basic, Some(u)) => rb.basic_auth(u, Some(password(u))),
        (Mode::Token, user) => {
            let who = user.map_or(Who::Anon, Who::User);
            let scopes: &[&str] = if role == Role::NarrowToken {
                &["repository:team/app:pull"]
            } else {
                &[
                    "repository:team/app:pull,push,delete",
                    "repository:shared/lib:pull",
                    "registry:catalog:*",
                    "registry:admin:*",
                ]
            };
            rb.bearer_auth(reg.token(who, scopes).await.0)
        }
    }
}

/// Every endpoint against every role, one expected status per cell; prints the matrix.
async fn status_matrix(mode: Mode) {
    let reg = Reg::start(mode).await;
    let seeded = seed(&reg, "team/app").await;
    seed(&reg, "shared/lib").await;
    let roles: Vec<Role> = ROLES
        .into_iter()
        .filter(|r| mode == Mode::Token || *r != Role::NarrowToken)
        .collect();
    let rows = rows();
    let mut wrong = Vec::new();
    let mut table = String::new();
    let mut n = 0;
    for row in &rows {
        let want_row = match mode {
            Mode::Token => row.token.unwrap_or(row.basic),
            Mode::Basic => row.basic,
        };
        let mut line = format!("{:<7}{:<62}", row.method.as_str(), row.path);
        for &role in &roles {
            n += 1;
            let (path, body) = prepare_cell(&reg, &seeded, row, n).await;
            let mut rb = reg.req(row.method.clone(), &path);
            rb = match row.body {
                Body::None => rb,
                Body::BasicLogin => match role.user() {
                    Some(u) => rb.basic_auth(u, Some(password(u))),
                    None => rb,
                },
                Body::Manifest => rb.header("content-type", OCI_MANIFEST).body(body),
                Body::Blob => rb
                    .header("content-type", "application/octet-stream")
                    .body(body),
                Body::Json(_) => rb.header("content-type", "application/json").body(body),
                Body::PasswordGrant => match role.user() {
                    Some(u) => reg.password_grant(u, password(u), &[]),
                    None => reg.password_grant("", "", &[]),
                },
            };
            if !matches!(row.body, Body::PasswordGrant | Body::BasicLogin) {
                rb = with_role(&reg, role, rb).await;
            }
            let got = rb.send().await.unwrap().status().as_u16();
            let want = match want_row[ROLES.iter().position(|r| *r == role).unwrap()] {
                D if mode == Mode::Basic && role.user().is_some() => 403,
                D => 401,
                s => s,
            };
            line.push_str(&format!(" {got:>3}"));
            if got != want {
                wrong.push(format!(
                    "{mode:?} {role:?} {} {path}: {got}, want {want}",
                    row.method
                ));
            }
        }
        table.push_str(&line);
        table.push('\n');
    }
    println!(
        "{mode:?} status matrix: {} endpoints x {} roles = {} cells\n{:<69}{}\n{table}",
        rows.len(),
        roles.len(),
        rows.len() * roles.len(),
        "",
        roles
            .iter()
            .map(|r| format!(" {:.3}", format!("{r:?}")))
            .collect::<String>()
    );
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn status_matrix_with_basic_auth() {
    status_matrix(Mode::Basic).await;
}

#[tokio::test]
async fn status_matrix_with_tokens() {
    status_matrix(Mode::Token).await;
}

/// `/v2/` needs a login (docker login relies on the challenge); the catalog lists only what
/// the caller may pull; a mount needs pull on its source, else it becomes an upload session.
async fn base_catalog_and_mounts(mode: Mode) {
    let reg = Reg::start(mode).await;
    let mut layers = Vec::new();
    for repo in REPOS {
        layers.push(seed(&reg, repo).await.layer.0);
    }

    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate");
    match mode {
        Mode::Basic => assert_eq!(
            challenge,
            format!("Basic realm=\"{REALM}\",charset=\"UTF-8\"")
        ),
        Mode::Token => assert_eq!(
            challenge,
            format!(
                "Bearer realm=\"http://{}/token\",service=\"{SERVICE}\"",
                reg.host()
            )
        ),
    }
    let r = reg
        .req(Method::GET, "/v2/")
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .as_who(Who::User("carol"), Method::GET, "/v2/", "x")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Catalog.
    let catalog = |who: Who| {
        let reg = &reg;
        async move {
            let mut rb = reg.req(Method::GET, "/v2/_catalog");
            match (mode, who) {
                (Mode::Basic, Who::User(u)) => rb = rb.basic_auth(u, Some(password(u))),
                (Mode::Token, _) => {
                    let (t, _) = reg.token(who, &["registry:catalog:*"]).await;
                    rb = rb.bearer_auth(t);
                }
                _ => {}
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "catalog for {who:?}");
            let v: serde_json::Value = r.json().await.unwrap();
            v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        catalog(Who::User("alice")).await,
        ["public/base", "shared/lib", "team/app"]
    );
    assert_eq!(
        catalog(Who::User("carol")).await,
        ["carol/x", "public/base", "shared/lib"]
    );
    assert_eq!(catalog(Who::Anon).await, ["public/base"]);
    assert_eq!(catalog(Who::User("root")).await.len(), 4);
    // Pagination counts only what the caller sees.
    let rb = reg.req(Method::GET, "/v2/_catalog?n=1");
    let rb = match mode {
        Mode::Basic => rb.basic_auth("carol", Some(password("carol"))),
        Mode::Token => rb.bearer_auth(
            reg.token(Who::User("carol"), &["registry:catalog:*"])
                .await
                .0,
        ),
    };
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=1&last=carol%2Fx>; rel=\"next\""
    );
    if mode == Mode::Token {
        // A token without the catalog scope does not list.
        let (t, _) = reg
            .token(Who::User("alice"), &["repository:team/app:pull"])
            .await;
        let r = reg
            .req(Method::GET, "/v2/_catalog")
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            header(&r, "www-authenticate")
                .contains("scope=\"registry:catalog:*\",error=\"insufficient_scope\"")
        );
    }

    // Mounts into team/app by alice: from carol/x (no pull there) falls back to a plain
    // upload session; from shared/lib (pull) mounts.
    let mount = |from: &'static str, d: Digest| {
        let reg = &reg;
        async move {
            let path = format!("/v2/team/app/blobs/uploads/?mount={d}&from={from}");
            let rb = reg.req(Method::POST, &path);
            let rb = match mode {
                Mode::Basic => rb.basic_auth("alice", Some(password("alice"))),
                Mode::Token => {
                    let s1 = "repository:team/app:pull,push".to_string();
                    let s2 = format!("repository:{from}:pull");
                    let (t, _) = reg.token(Who::User("alice"), &[&s1, &s2]).await;
                    rb.bearer_auth(t)
                }
            };
            rb.send().await.unwrap()
        }
    };
    let carol_layer = layers[2].clone();
    let r = mount("carol/x", carol_layer.clone()).await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "mount from an unreadable repository"
    );
    assert!(header(&r, "location").contains("/v2/team/app/blobs/uploads/"));
    assert!(!reg.blob_present("team/app", &carol_layer).await);
    let r = reg
        .admin(Method::DELETE, &header(&r, "location"), "team/app")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let shared_layer = layers[1].clone();
    let r = mount("shared/lib", shared_layer.clone()).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "mount from a readable repository"
    );
    assert!(reg.blob_present("team/app", &shared_layer).await);
    // A registry-wide mount (no `from`) is not allowed to non-admins either.
    let path = format!("/v2/team/app/blobs/uploads/?mount={carol_layer}");
    let r = reg
        .as_who(Who::User("alice"), Method::POST, &path, "team/app")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(!reg.blob_present("team/app", &carol_layer).await);
}

#[tokio::test]
async fn base_catalog_and_mounts_with_basic_auth() {
    base_catalog_and_mounts(Mode::Basic).await;
}

#[tokio::test]
async fn base_catalog_and_mounts_with_tokens() {
    base_catalog_and_mounts(Mode::Token).await;
}

/// After N failures a user name and the client address get 429 with Retry-After, even with
/// the right password, until the backoff ends; the token endpoint counts too.
#[tokio::test]
async fn failed_logins_are_throttled() {
    let reg = Reg::start_with(Mode::Token, 3, 2, "warn").await;
    let get = |user: &'static str, pw: &'static str| {
        let reg = &reg;
        async move {
            reg.req(
                Method::GET,
                &format!(
                    "/token?{}",
                    qs(&[("service", SERVICE), ("scope", "repository:team/app:pull")])
                ),
            )
            .basic_auth(user, Some(pw))
            .send()
            .await
            .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(
            get("alice", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = get("alice", password("alice")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    // The address is locked too: another user from it, and the OAuth2 form.
    assert_eq!(
        get("bob", password("bob")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let r = reg
        .password_grant("alice", password("alice"), &[])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = get("alice", password("alice")).await;
    assert_eq!(r.status(), StatusCode::OK, "after the backoff");

    // Basic auth on the registry API counts the same way.
    let reg = Reg::start_with(Mode::Basic, 2, 30, "warn").await;
    for _ in 0..2 {
        let r = reg
            .req(Method::GET, "/v2/")
            .basic_auth("carol", Some("nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = reg
        .req(Method::GET, "/v2/shared/lib/tags/list")
        .basic_auth("carol", Some(password("carol")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!header(&r, "retry-after").is_empty());
}

/// Forty concurrent wrong guesses at one user's password, on Basic auth and on both forms
/// of `/token`: at most the limit (5) are checked against the password, the rest are
/// answered 429 with Retry-After before any check, and then the right password is too.
#[tokio::test]
async fn concurrent_guesses_evaluate_at_most_the_limit() {
    for (mode, endpoint) in [
        (Mode::Basic, "/v2/"),
        (Mode::Token, "GET /token"),
        (Mode::Token, "POST /token"),
    ] {
        let reg = Reg::start_with(mode, 5, 60, "warn").await;
        let guesses: Vec<String> = (0..40).map(|i| format!("guess-{i}")).collect();
        let build = |pw: &str| match endpoint {
            "/v2/" => reg.req(Method::GET, "/v2/").basic_auth("alice", Some(pw)),
            "GET /token" => reg
                .req(
                    Method::GET,
                    &format!("/token?{}", qs(&[("service", SERVICE)])),
                )
                .basic_auth("alice", Some(pw)),
            _ => reg.password_grant("alice", pw, &[]),
        };
        let sends = guesses.iter().map(|pw| {
            let rb = build(pw);
            async move {
                let r = rb.send().await.unwrap();
                let retry = header(&r, "retry-after");
                (r.status(), retry)
            }
        });
        let answers = futures::future::join_all(sends).await;
        let throttled = answers
            .iter()
            .filter(|(s, retry)| *s == StatusCode::TOO_MANY_REQUESTS && !retry.is_empty())
            .count();
        let evaluated = answers
            .iter()
            .filter(|(s, _)| matches!(*s, StatusCode::OK | StatusCode::UNAUTHORIZED))
            .count();
        println!("{endpoint}: {evaluated} evaluated, {throttled} throttled of 40");
        assert_eq!(evaluated + throttled, 40, "{endpoint}: {answers:?}");
        assert!(evaluated <= 5, "{endpoint}: {evaluated} passwords checked");
        assert!(throttled >= 35, "{endpoint}");
        // The right password now waits out the lock-out like any other.
        let r = build(password("alice")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{endpoint}");
        assert!(!header(&r, "retry-after").is_empty());
    }
    // Forty concurrent requests with the right password are one check, not forty attempts:
    // a client pushing layers in parallel is never throttled.
    let reg = Reg::start_with(Mode::Basic, 5, 60, "warn").await;
    let sends = (0..40).map(|_| {
        let rb = reg
            .req(Method::GET, "/v2/")
            .basic_auth("bob", Some(password("bob")));
        async move { rb.send().await.unwrap().status() }
    });
    let answers = futures::future::join_all(sends).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
}

/// A bearer token's scope bounds the management API too: the admin's token for
/// `repository:public/x:pull` deletes nothing through `/api/v1`, a token with
/// `registry:admin:*` does, and a non-admin never gets that scope.
#[tokio::test]
async fn management_api_honours_the_token_scope() {
    let reg = Reg::start(Mode::Token).await;
    seed(&reg, "team/app").await;
    let tag = "/api/v1/registry/tags/team/app:v1";
    let (narrow, _) = reg
        .token(Who::User("root"), &["repository:public/x:pull"])
        .await;
    for (method, path) in [
        (Method::DELETE, tag),
        (Method::GET, tag),
        (Method::GET, "/api/v1/registry/images"),
        (Method::DELETE, "/api/v1/registry/images/team/app"),
    ] {
        let r = reg
            .req(method.clone(), path)
            .bearer_auth(&narrow)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let challenge = header(&r, "www-authenticate");
        assert!(
            challenge.contains("scope=\"registry:admin:*\"")
                && challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
    }
    assert!(
        reg.manifest_digest("team/app", "v1").await.is_some(),
        "the tag survived"
    );
    // A non-admin asking for the admin scope is granted nothing.
    let (t, _) = reg.token(Who::User("bob"), &["registry:admin:*"]).await;
    assert!(token_access(&t).is_empty());
    let r = reg
        .req(Method::GET, tag)
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The admin's token with the admin scope works, and Basic keeps the admin's rights.
    let (admin, _) = reg.token(Who::User("root"), &["registry:admin:*"]).await;
    assert_eq!(
        token_access(&admin),
        vec![("registry:admin".to_string(), vec!["*".to_string()])]
    );
    let r = reg
        .req(Method::GET, tag)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .req(Method::DELETE, tag)
        .basic_auth("root", Some(password("root")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(reg.manifest_digest("team/app", "v1").await.is_none());
}

fn sign(reg: &Reg, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(reg.root().join("token-signing-key-es256.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        claims,
        &key,
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Tokens: the generated key is private and survives restarts; expired, foreign-repository,
/// tampered, wrong-issuer and wrong-audience tokens are refused; asking for more yields
/// less; refresh tokens work through the OAuth2 form and are no access tokens.
#[tokio::test]
async fn tokens_are_verified_and_scoped() {
    use std::os::unix::fs::PermissionsExt;
    let mut reg = Reg::start(Mode::Token).await;
    seed(&reg, "team/app").await;
    seed(&reg, "carol/x").await;
    let key = reg.root().join("token-signing-key-es256.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let get = |t: &str, repo: &str| {
        let reg = &reg;
        let (t, repo) = (t.to_string(), repo.to_string());
        async move {
            reg.req(Method::GET, &format!("/v2/{repo}/manifests/v1"))
                .header("accept", OCI_MANIFEST)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
        }
    };

    // Scope downgrade: alice asks for everything on two repositories and gets what the
    // rules allow; the answer has the token fields the spec lists.
    let (t, v) = reg
        .token(
            Who::User("alice"),
            &[
                "repository:team/app:pull,push,delete",
                "repository:carol/x:pull,push,delete",
                "repository:shared/lib:*",
            ],
        )
        .await;
    assert_eq!(
        token_access(&t),
        vec![
            (
                "repository:team/app".to_string(),
                vec!["pull".to_string(), "push".to_string()]
            ),
            (
                "repository:shared/lib".to_string(),
                vec!["pull".to_string()]
            ),
        ]
    );
    assert_eq!(v["access_token"], v["token"]);
    assert_eq!(v["expires_in"], 300);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(get(&t, "team/app").await.status(), StatusCode::OK);
    // A token for repository A is useless for B.
    let r = get(&t, "carol/x").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&r, "www-authenticate")
            .contains("scope=\"repository:carol/x:pull\",error=\"insufficient_scope\"")
    );

    // Tampering: another signature, or a payload granting more under the old signature.
    let parts: Vec<&str> = t.split('.').collect();
    let mut sig = parts[2].as_bytes().to_vec();
    sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
    let bad_sig = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(sig).unwrap()
    );
    let r = get(&bad_sig, "team/app").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").contains("error=\"invalid_token\""));
    let mut claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["access"] =
        serde_json::json!([{"type":"repository","name":"carol/x","actions":["pull"]}]);
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_eq!(
        get(&forged, "carol/x").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // "alg: none" is refused.
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(
        get(&format!("{none_header}.{forged_payload}."), "carol/x")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Tokens signed with the registry's own key: valid claims pass, expired ones (beyond
    // the 10 s leeway), other issuers and audiences, and future nbf do not.
    let base = serde_json::json!({
        "iss": ISSUER, "sub": "carol", "aud": SERVICE, "exp": now() + 60, "nbf": now() - 1,
        "iat": now(), "jti": "t1",
        "access": [{"type": "repository", "name": "carol/x", "actions": ["pull"]}],
    });
    assert_eq!(
        get(&sign(&reg, &base), "carol/x").await.status(),
        StatusCode::OK
    );
    for (field, value) in [
        ("exp", serde_json::json!(now() - 30)),
        ("iss", serde_json::json!("someone-else")),
        ("aud", serde_json::json!("other-service")),
        ("nbf", serde_json::json!(now() + 120)),
    ] {
        let mut c = base.clone();
        c[field] = value;
        let r = get(&sign(&reg, &c), "carol/x").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{field}");
        assert!(
            header(&r, "www-authenticate").contains("error=\"invalid_token\""),
            "{field}"
        );
    }

    // Anonymous tokens carry only anonymous rights.
    let (anon, _) = reg
        .token(
            Who::Anon,
            &[
                "repository:team/app:pull",
                "repository:public/base:pull,push",
            ],
        )
        .await;
    assert_eq!(
        token_access(&anon),
        vec![(
            "repository:public/base".to_string(),
            vec!["pull".to_string()]
        )]
    );
    // A wrong password gets no token; an account that is not the user is refused.
    let r = reg
        .req(
            Method::GET,
            &format!("/token?{}", qs(&[("service", SERVICE)])),
        )
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(
            Method::GET,
            &format!("/token?{}", qs(&[("service", SERVICE), ("account", "bob")])),
        )
        .basic_auth("alice", Some(password("alice")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // OAuth2: password grant with offline access gives a refresh token; the refresh grant
    // gives access tokens; a refresh token is not an access token.
    let r = reg
        .password_grant(
            "carol",
            password("carol"),
            &[
                ("access_type", "offline"),
                ("scope", "repository:carol/x:pull repository:team/app:pull"),
            ],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "repository:carol/x:pull");
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        get(v["access_token"].as_str().unwrap(), "carol/x")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&refresh, "carol/x").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = reg
        .req(Method::POST, "/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(qs(&[
            ("grant_type", "refresh_token"),
            ("service", SERVICE),
            ("client_id", "test"),
            ("refresh_token", refresh.as_str()),
            ("scope", "repository:carol/x:pull,delete"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        token_access(v["access_token"].as_str().unwrap()),
        vec![(
            "repository:carol/x".to_string(),
            vec!["delete".to_string(), "pull".to_string()]
        )]
    );
    let r = reg
        .req(Method::POST, "/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(qs(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t.as_str()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "an access token is no refresh token"
    );

    // The key survives a restart: tokens issued before still verify.
    let (t, _) = reg
        .token(Who::User("carol"), &["repository:carol/x:pull"])
        .await;
    let before = std::fs::read(&key).unwrap();
    reg.restart().await;
    assert_eq!(std::fs::read(&key).unwrap(), before);
    let r = reg
        .req(Method::GET, "/v2/carol/x/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a token from before the restart"
    );
}

fn run(program: &str, args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Seed `repo_tag` with the busybox test image through skopeo and the admin's credentials.
fn seed_image(reg: &Reg, repo_tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    busybox_layout(dir.path(), "t");
    sh(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("root:{}", password("root")),
            &format!("oci:{}:t", dir.path().display()),
            &format!("docker://{}/{repo_tag}", reg.host()),
        ],
    );
}

/// docker login, pull, push, a denied push, logout; own `DOCKER_CONFIG` per test.
async fn docker_flow(mode: Mode) {
    if !require_tool("docker") || !require_tool("dockerd") || !require_tool("skopeo") {
        return;
    }
    ensure_dockerd();
    let reg = Reg::start(mode).await;
    let host = reg.host();
    seed_image(&reg, "team/base:1");
    let cfg = tempfile::tempdir().unwrap();
    let env = [("DOCKER_CONFIG", cfg.path())];
    let docker = |args: &[&str], stdin: Option<&str>| run("docker", args, &env, stdin);

    let bad = docker(
        &["login", &host, "-u", "bob", "--password-stdin"],
        Some("wrong"),
    );
    assert!(
        !bad.status.success(),
        "docker login with a wrong password must fail"
    );
    ok(
        &docker(
            &["login", &host, "-u", "bob", "--password-stdin"],
            Some(password("bob")),
        ),
        "docker login",
    );
    let image = format!("{host}/team/base:1");
    let copy = format!(
        "{host}/team/docker-copy:{}",
        if mode == Mode::Basic {
            "basic"
        } else {
            "token"
        }
    );
    ok(&docker(&["pull", &image], None), "docker pull");
    ok(&docker(&["tag", &image, &copy], None), "docker tag");
    ok(&docker(&["push", &copy], None), "docker push");
    let repo = copy.split_once('/').unwrap().1.split_once(':').unwrap();
    assert!(
        reg.manifest_digest(repo.0, repo.1).await.is_some(),
        "pushed by docker"
    );
    // bob may only pull shared/**: the push is refused and nothing lands.
    let denied = format!("{host}/shared/docker-denied:1");
    ok(&docker(&["tag", &image, &denied], None), "docker tag");
    let out = docker(&["push", &denied], None);
    assert!(
        !out.status.success(),
        "push to a pull-only repository must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("denied") || err.contains("unauthorized") || err.contains("403"),
        "{err}"
    );
    assert_eq!(reg.manifest_digest("shared/docker-denied", "1").await, None);

    ok(&docker(&["logout", &host], None), "docker logout");
    let _ = docker(&["rmi", "-f", &image, &copy, &denied], None);
    let out = docker(&["pull", &image], None);
    assert!(!out.status.success(), "pull after logout must fail");
}

#[tokio::test]
async fn docker_logs_in_pushes_and_pulls_with_basic_auth() {
    docker_flow(Mode::Basic).await;
}

#[tokio::test]
async fn docker_logs_in_pushes_and_pulls_with_tokens() {
    docker_flow(Mode::Token).await;
}

/// podman login (plain HTTP), pull, push, logout with private storage and auth file.
async fn podman_flow(mode: Mode) {
    if !require_tool("podman") || !require_tool("skopeo") {
        return;
    }
    let reg = Reg::start(mode).await;
    let host = reg.host();
    seed_image(&reg, "team/base:1");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let runroot = dir.path().join("runroot");
    let authfile = dir.path().join("auth.json");
    let (root, runroot, authfile) = (
        root.to_str().unwrap(),
        runroot.to_str().unwrap(),
        authfile.to_str().unwrap(),
    );
    let p = |args: &[&str]| {
        let mut full = vec!["--root", root, "--runroot", runroot];
        full.extend_from_slice(args);
        podman(&full)
    };
    let bad = Command::new("podman")
        .args([
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile,
            "-u",
            "alice",
            "-p",
            "wrong",
            &host,
        ])
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "podman login with a wrong password must fail"
    );
    p(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "-u",
        "alice",
        "-p",
        password("alice"),
        &host,
    ]);
    let image = format!("{host}/team/base:1");
    let copy = format!("{host}/team/podman-copy:1");
    p(&["pull", "--tls-verify=false", "--authfile", authfile, &image]);
    p(&["tag", &image, &copy]);
    p(&["push", "--tls-verify=false", "--authfile", authfile, &copy]);
    assert!(reg.manifest_digest("team/podman-copy", "1").await.is_some());
    p(&["logout", "--authfile", authfile, &host]);
    let out = Command::new("podman")
        .args([
            "--storage-driver",
            "vfs",
            "--root",
            root,
            "--runroot",
            runroot,
        ])
        .args([
            "push",
            "--tls-verify=false",
            "--authfile",
            authfile,
            &image,
            &format!("{host}/team/after-logout:1"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "push after logout must fail");
    assert_eq!(reg.manifest_digest("team/after-logout", "1").await, None);
}

#[tokio::test]
async fn podman_logs_in_pushes_and_pulls_with_basic_auth() {
    podman_flow(Mode::Basic).await;
}

#[tokio::test]
async fn podman_logs_in_pushes_and_pulls_with_tokens() {
    podman_flow(Mode::Token).await;
}

/// skopeo with --src-creds/--dest-creds, and a denied copy that changes nothing.
async fn skopeo_flow(mode: Mode) {
    if !require_tool("skopeo") {
        return;
    }
    let reg = Reg::start(mode).await;
    let host = reg.host();
    seed_image(&reg, "shared/base:1");
    seed_image(&reg, "public/base:1");
    // Anonymous pull of a public repository needs no login (an anonymous token in token
    // mode), though `/v2/` asks for one.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{host}/public/base:1"))
        .output()
        .unwrap();
    ok(&out, "anonymous skopeo inspect of public/base");
    let src = format!("docker://{host}/shared/base:1");
    let creds = |u: &str| format!("{u}:{}", password(u));
    let copy = |user: &str, dest: &str| {
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .args(["--src-creds", &creds(user), "--dest-creds", &creds(user)])
            .arg(&src)
            .arg(format!("docker://{host}/{dest}"))
            .output()
            .unwrap()
    };
    ok(&copy("carol", "carol/copied:1"), "skopeo copy as carol");
    assert!(reg.manifest_digest("carol/copied", "1").await.is_some());
    let out = copy("alice", "carol/stolen:1");
    assert!(!out.status.success(), "alice may not push to carol/*");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("denied") || err.contains("unauthorized") || err.contains("403"),
        "{err}"
    );
    assert_eq!(reg.manifest_digest("carol/stolen", "1").await, None);
    assert_eq!(reg.upload_files(), 0);
    // Without credentials: no read of a private repository.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds", &src])
        .output()
        .unwrap();
    assert!(!out.status.success(), "anonymous inspect of shared/base");
}

#[tokio::test]
async fn skopeo_copies_with_credentials_and_is_denied_with_basic_auth() {
    skopeo_flow(Mode::Basic).await;
}

#[tokio::test]
async fn skopeo_copies_with_credentials_and_is_denied_with_tokens() {
    skopeo_flow(Mode::Token).await;
}

/// With debug logging, logins, token requests (GET and the OAuth2 form), pulls with the
/// token, and tokens in query strings leave no password, token or Basic header in the log.
#[tokio::test]
async fn credentials_and_tokens_never_reach_the_logs() {
    if !require_tool("skopeo") {
        return;
    }
    let reg = Reg::start_with(Mode::Token, 100, 60, "debug").await;
    seed_image(&reg, "team/base:1");
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    sh(
        "skopeo",
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            "-u",
            "bob",
            "-p",
            password("bob"),
            &host,
        ],
    );
    sh(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            &format!("docker://{host}/team/base:1"),
            &format!("oci:{}:t", dir.path().join("layout").display()),
        ],
    );
    let mut secrets: Vec<String> = USERS.iter().map(|(_, p)| p.to_string()).collect();
    let (t, _) = reg
        .token(Who::User("bob"), &["repository:team/base:pull"])
        .await;
    let r = reg
        .req(
            Method::GET,
            &format!("/v2/team/base/tags/list?access_token={t}"),
        )
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .password_grant("bob", password("bob"), &[("access_type", "offline")])
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    // A failed login and a bad token are logged as events, without the secrets.
    let r = reg
        .req(Method::GET, "/v2/")
        .basic_auth("bob", Some("wrong-guess-xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(Method::GET, "/v2/")
        .bearer_auth("not.a.token-xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    secrets.extend([
        t.clone(),
        refresh,
        "wrong-guess-xyz".into(),
        "not.a.token-xyz".into(),
    ]);
    secrets
        .push(base64::engine::general_purpose::STANDARD.encode(format!("bob:{}", password("bob"))));
    let log = reg.log();
    assert!(log.contains("DEBUG"), "debug logging is on");
    assert!(
        log.contains("/v2/team/base/tags/list"),
        "the access log has paths"
    );
    assert!(log.contains("login failed"), "{log}");
    let mut seen = BTreeSet::new();
    for s in &secrets {
        if log.contains(s.as_str()) {
            seen.insert(s.clone());
        }
    }
    assert!(seen.is_empty(), "secrets in the log: {seen:?}");
    // The token's signature part alone does not appear either.
    assert!(!log.contains(t.rsplit('.').next().unwrap()));
}

/// Start-up refuses htpasswd files with non-bcrypt hashes, and the environment variables
/// `REGISTRY_AUTH_HTPASSWD_PATH`/`_REALM` turn Basic auth on.
#[tokio::test]
async fn htpasswd_from_the_environment_and_non_bcrypt_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let md5 = dir.path().join("md5");
    std::fs::write(&md5, "eve:$apr1$x1234567$abcdefghijklmnopqrstuv\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hyperregistry"))
        .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            dir.path().join("data"),
        )
        .env("REGISTRY_AUTH_HTPASSWD_PATH", &md5)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only bcrypt") && err.contains("eve"), "{err}");
    assert!(!err.contains("abcdefghij"), "the hash is not printed");

    let good = dir.path().join("htpasswd");
    let h = bcrypt::hash_with_result("envpw", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(&good, format!("dora:{h}\n")).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperregistry"))
        .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            dir.path().join("data"),
        )
        .env("REGISTRY_AUTH_HTPASSWD_PATH", &good)
        .env("REGISTRY_AUTH_HTPASSWD_REALM", "env-realm")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new();
    let url = format!("http://127.0.0.1:{port}/v2/");
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        if let Ok(r) = client.get(&url).send().await {
            break r;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "www-authenticate"),
        "Basic realm=\"env-realm\",charset=\"UTF-8\""
    );
    let r = client
        .get(&url)
        .basic_auth("dora", Some("envpw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // No rules: an authenticated user may do nothing on repositories.
    let r = client
        .get(format!("http://127.0.0.1:{port}/v2/any/tags/list"))
        .basic_auth("dora", Some("envpw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let _ = child.kill();
    let _ = child.wait();
}
