//! Registry credentials: Docker's `config.json` (with `credsStore` / `credHelpers`) and
//! podman's `auth.json`, read in that order; `login` writes Docker's format.
//!
//! Secrets never reach logs: [`Credential`]'s `Debug` redacts them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or token used as a password).
    Basic {
        /// User name.
        username: String,
        /// Password or personal access token.
        password: String,
    },
    /// An OAuth2 refresh token from `docker login` against a token server.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// Errors reading or writing credential files.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Malformed JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: serde_json::Error,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper}: {message}")]
    Helper {
        /// Helper name.
        helper: String,
        /// What it said.
        message: String,
    },
}

/// Where credentials are looked up, in order, and where `login` writes.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    /// Files to read, first match wins.
    pub read_paths: Vec<PathBuf>,
    /// File `login`/`logout` modify.
    pub write_path: PathBuf,
}

/// Docker's config file: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => dirs::home_dir()
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".docker/config.json"),
    }
}

/// podman's auth files: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`.
pub fn podman_auth_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        v.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(h) = dirs::home_dir() {
        v.push(h.join(".config/containers/auth.json"));
    }
    v
}

/// The keys a registry may be filed under in `auths`.
fn registry_keys(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == crate::reference::DOCKER_HUB {
        keys.push("https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
        keys.push("registry-1.docker.io".into());
    }
    keys
}

fn read_json(path: &Path) -> Result<Option<Value>, CredentialError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| CredentialError::Json {
                    path: path.into(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn decode_auth(entry: &Value) -> Option<Credential> {
    if let Some(tok) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Some(Credential::IdentityToken(tok.to_string()));
    }
    let auth = entry.get("auth").and_then(Value::as_str)?;
    let decoded = String::from_utf8(B64.decode(auth.trim()).ok()?).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(Credential::Basic {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// Ask `docker-credential-<helper> get` for a registry's credentials.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, CredentialError> {
    let err = |message: String| CredentialError::Helper {
        helper: helper.to_string(),
        message,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(registry.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(msg.trim().to_string()));
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| err(format!("invalid output: {e}")))?;
    let user = v
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
    Ok(Some(if user == "<token>" {
        Credential::IdentityToken(secret.to_string())
    } else {
        Credential::Basic {
            username: user.to_string(),
            password: secret.to_string(),
        }
    }))
}

impl Default for CredentialStore {
    fn default() -> Self {
        let docker = docker_config_path();
        let mut read_paths = vec![docker.clone()];
        read_paths.extend(podman_auth_paths());
        CredentialStore {
            read_paths,
            write_path: docker,
        }
    }
}

impl CredentialStore {
    /// Read from and write to one file only (`--authfile`).
    pub fn single(path: PathBuf) -> CredentialStore {
        CredentialStore {
            read_paths: vec![path.clone()],
            write_path: path,
        }
    }

    /// Credentials for `registry` (host[:port]), if any file or helper has them.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>, CredentialError> {
        for path in &self.read_paths {
            let Some(cfg) = read_json(path)? else {
                continue;
            };
            if let Some(helper) = cfg
                .get("credHelpers")
                .and_then(|h| h.get(registry))
                .and_then(Value::as_str)
                && let Some(c) = run_helper(helper, registry)?
            {
                return Ok(Some(c));
            }
            if let Some(auths) = cfg.get("auths") {
                for key in registry_keys(registry) {
                    if let Some(c) = auths.get(&key).and_then(decode_auth) {
                        return Ok(Some(c));
                    }
                }
            }
            if let Some(store) = cfg.get("credsStore").and_then(Value::as_str)
                && let Some(c) = run_helper(store, registry)?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Save credentials for `registry` (Docker's `auths` format, file mode 0600).
    pub fn login(&self, registry: &str, credential: &Credential) -> Result<(), CredentialError> {
        let mut cfg = read_json(&self.write_path)?.unwrap_or_else(|| serde_json::json!({}));
        if !cfg.get("auths").is_some_and(Value::is_object) {
            cfg["auths"] = serde_json::json!({});
        }
        let entry = match credential {
            Credential::Basic { username, password } => {
                serde_json::json!({ "auth": B64.encode(format!("{username}:{password}")) })
            }
            Credential::IdentityToken(t) => serde_json::json!({ "identitytoken": t }),
        };
        cfg["auths"][registry] = entry;
        self.write(&cfg)
    }

    /// Remove saved credentials for `registry`. Returns whether there were any.
    pub fn logout(&self, registry: &str) -> Result<bool, CredentialError> {
        let Some(mut cfg) = read_json(&self.write_path)? else {
            return Ok(false);
        };
        let mut removed = false;
        if let Some(auths) = cfg.get_mut("auths").and_then(Value::as_object_mut) {
            for key in registry_keys(registry) {
                removed |= auths.remove(&key).is_some();
            }
        }
        if removed {
            self.write(&cfg)?;
        }
        Ok(removed)
    }

    fn write(&self, cfg: &Value) -> Result<(), CredentialError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = &self.write_path;
        let io = |source| CredentialError::Io {
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let bytes = serde_json::to_vec_pretty(cfg).expect("json serializes");
        f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Parse `USER:PASSWORD` as given on a command line.
pub fn parse_user_password(s: &str) -> Option<Credential> {
    let (u, p) = s.split_once(':')?;
    Some(Credential::Basic {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// Base64 of `user:password`, for a `Basic` header.
pub fn basic_header(username: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{username}:{password}")))
}

/// Key/value parameters of a `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercase).
    pub scheme: String,
    /// Parameters such as realm, service, scope.
    pub params: BTreeMap<String, String>,
}

/// Parse a `WWW-Authenticate` header value (one challenge, quoted or token values).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (val, remaining) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end?;
            (out, &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, val);
        s = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#).unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        let c = parse_challenge("Bearer realm=https://x/token, service=x").unwrap();
        assert_eq!(c.params["service"], "x");
    }

    #[test]
    fn login_lookup_logout_roundtrip_and_podman_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker/config.json");
        let podman = dir.path().join("containers/auth.json");
        std::fs::create_dir_all(podman.parent().unwrap()).unwrap();
        std::fs::write(
            &podman,
            format!(
                r#"{{"auths":{{"podman.example":{{"auth":"{}"}}}}}}"#,
                B64.encode("pu:pp")
            ),
        )
        .unwrap();
        let store = CredentialStore {
            read_paths: vec![docker.clone(), podman],
            write_path: docker.clone(),
        };
        assert_eq!(store.get("localhost:5000").unwrap(), None);
        let cred = Credential::Basic {
            username: "u".into(),
            password: "s3cret".into(),
        };
        store.login("localhost:5000", &cred).unwrap();
        assert_eq!(store.get("localhost:5000").unwrap(), Some(cred.clone()));
        assert!(!format!("{cred:?}").contains("s3cret"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&docker).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            store.get("podman.example").unwrap(),
            Some(Credential::Basic {
                username: "pu".into(),
                password: "pp".into()
            })
        );
        assert!(store.logout("localhost:5000").unwrap());
        assert_eq!(store.get("localhost:5000").unwrap(), None);
        assert!(!store.logout("localhost:5000").unwrap());
    }

    #[test]
    fn credential_helpers_are_run() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\nif [ \"$host\" = helped.example ]; then echo '{\"Username\":\"hu\",\"Secret\":\"hs\"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, r#"{"credsStore":"fake","auths":{}}"#).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // SAFETY: tests in this module do not read PATH concurrently with this write.
        unsafe { std::env::set_var("PATH", path) };
        let store = CredentialStore::single(cfg);
        assert_eq!(
            store.get("helped.example").unwrap(),
            Some(Credential::Basic {
                username: "hu".into(),
                password: "hs".into()
            })
        );
        assert_eq!(store.get("other.example").unwrap(), None);
    }
}
