//! The Docker token flow's JWTs: scopes, claims, signing keys, issuing and verifying.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RsaKeyPair,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::config::TokenConfig;
use crate::error::AuthError;
use crate::rules::Action;

/// One entry of a token's `access` claim, and one requested scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog`.
    pub name: String,
    /// Granted actions (`pull`, `push`, `delete`, `*`).
    pub actions: Vec<String>,
}

impl AccessEntry {
    /// Whether this entry grants `action` on `kind:name`.
    pub fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }

    /// Parse `type[(class)]:name:action,action` (the name may contain `:`, as in a host with
    /// a port). `None` when malformed.
    pub fn parse_scope(s: &str) -> Option<AccessEntry> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split_once('(').map(|(k, _)| k).unwrap_or(kind);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(AccessEntry {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// The scope string `type:name:actions`.
    pub fn to_scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }

    /// The repository actions requested (`*` meaning all of them).
    pub fn requested_actions(&self) -> Vec<Action> {
        let mut out: Vec<Action> = Vec::new();
        for a in &self.actions {
            if a == "*" {
                out.extend(Action::ALL);
            } else if let Some(a) = Action::parse(a) {
                out.push(a);
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The claims of an access token (Distribution's `docs/spec/auth/jwt.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user name, empty for anonymous tokens.
    pub sub: String,
    /// Audience: the service.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Not before.
    pub nbf: u64,
    /// Issued at.
    pub iat: u64,
    /// Unique token id.
    pub jti: String,
    /// What the token grants.
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

/// Audience suffix of refresh tokens, so that one never passes as an access token.
const REFRESH_AUDIENCE_SUFFIX: &str = "#refresh";

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 10;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where replicas publish the public halves of their signing keys (in the binary: the
/// metadata database they share), so that a token signed by one replica verifies on every
/// other, whether each generated its own key or all were given one.
#[async_trait::async_trait]
pub trait KeyDirectory: Send + Sync + 'static {
    /// Record a public key under its key id (a second publication changes nothing).
    async fn publish(&self, kid: &str, algorithm: &str, public_key: &[u8]) -> Result<(), String>;
    /// The algorithm and public key recorded under `kid`.
    async fn lookup(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>, String>;
}

/// How long an unknown key id is remembered as unknown (a burst of forged tokens then costs
/// one directory lookup, and a replica that just started is found soon after).
const UNKNOWN_KID_TTL: Duration = Duration::from_secs(10);
/// Most other replicas' key ids remembered.
const PEER_KEYS: usize = 1024;

/// Another replica's verification key, or the memory that a key id is unknown.
#[derive(Clone)]
enum PeerKey {
    Known(Algorithm, DecodingKey),
    Unknown(Instant),
}

/// Signs and verifies the registry's tokens with one key pair; verifies other replicas'
/// tokens with the public keys they published.
pub struct TokenKeys {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: Vec<u8>,
    kid: String,
    issuer: String,
    service: String,
    expiration: u64,
    refresh_expiration: u64,
    directory: parking_lot::RwLock<Option<Arc<dyn KeyDirectory>>>,
    peers: parking_lot::Mutex<HashMap<String, PeerKey>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// The JOSE name of a signing algorithm this service uses.
fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        _ => "RS256",
    }
}

/// A key's id: the first 16 bytes of the SHA-256 of its public key, hex.
fn key_id(public: &[u8]) -> String {
    hex::encode(&sha2::Sha256::digest(public)[..16])
}

fn key_err(path: &Path, msg: impl std::fmt::Display) -> AuthError {
    AuthError::Key(format!("{}: {msg}", path.display()))
}

/// Write `bytes` to `path` atomically with mode 0600 (temp file, fsync, rename, fsync dir).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |what: &str, e| AuthError::Io {
        what: format!("{what} {}", path.display()),
        source: e,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("creating", e))?;
    let result = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .and_then(|_| std::fs::File::open(dir)?.sync_all());
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing", e));
    }
    Ok(())
}

impl TokenKeys {
    /// Load the configured key, or the one in `data_dir` (generated there at first start).
    pub fn load(cfg: &TokenConfig, data_dir: &Path) -> Result<TokenKeys, AuthError> {
        let alg = match cfg.algorithm.to_ascii_uppercase().as_str() {
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            other => {
                return Err(AuthError::Config(format!(
                    "auth.token.algorithm {other:?}: expected ES256 or RS256"
                )));
            }
        };
        let path = match &cfg.key {
            Some(p) => p.clone(),
            None => {
                let p = data_dir.join(format!(
                    "token-signing-key-{}.pem",
                    cfg.algorithm.to_ascii_lowercase()
                ));
                if !p.exists() {
                    let der = generate(alg)?;
                    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
                    write_private(&p, pem.as_bytes())?;
                    tracing::info!(path = %p.display(), algorithm = ?alg, "generated the token signing key");
                }
                p
            }
        };
        let text = std::fs::read(&path).map_err(|e| AuthError::Io {
            what: format!("reading token key {}", path.display()),
            source: e,
        })?;
        let (encoding, public) = match alg {
            Algorithm::ES256 => {
                let block = pem::parse(&text).map_err(|e| key_err(&path, e))?;
                if block.tag() != "PRIVATE KEY" {
                    return Err(key_err(
                        &path,
                        "ES256 needs a PKCS#8 P-256 key (-----BEGIN PRIVATE KEY-----)",
                    ));
                }
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, block.contents())
                        .map_err(|e| key_err(&path, format!("not a P-256 private key: {e}")))?;
                (
                    EncodingKey::from_ec_der(block.contents()),
                    pair.public_key().as_ref().to_vec(),
                )
            }
            _ => {
                let block = pem::parse(&text).map_err(|e| key_err(&path, e))?;
                let pair = match block.tag() {
                    "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()),
                    "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()),
                    other => {
                        return Err(key_err(&path, format!("unexpected PEM block {other:?}")));
                    }
                }
                .map_err(|e| key_err(&path, format!("not an RSA private key: {e}")))?;
                let enc = EncodingKey::from_rsa_pem(&text).map_err(|e| key_err(&path, e))?;
                (enc, pair.public_key().as_ref().to_vec())
            }
        };
        let decoding = match alg {
            Algorithm::ES256 => DecodingKey::from_ec_der(&public),
            _ => DecodingKey::from_rsa_der(&public),
        };
        Ok(TokenKeys {
            alg,
            encoding,
            decoding,
            kid: key_id(&public),
            public,
            issuer: cfg.issuer.clone(),
            service: cfg.service.clone(),
            expiration: cfg.expiration.max(1),
            refresh_expiration: cfg.refreshexpiration.max(1),
            directory: parking_lot::RwLock::new(None),
            peers: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// This key's id (the `kid` header of every token it signs).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Publish this key's public half in `directory` and verify tokens whose key id is not
    /// this key's with the keys found there.
    pub async fn share(&self, directory: Arc<dyn KeyDirectory>) -> Result<(), AuthError> {
        directory
            .publish(&self.kid, alg_name(self.alg), &self.public)
            .await
            .map_err(|e| AuthError::Key(format!("publishing the token verification key: {e}")))?;
        *self.directory.write() = Some(directory);
        Ok(())
    }

    /// The algorithm and key that verify `token`: this key, or the published key its `kid`
    /// names.
    async fn key_for(&self, token: &str) -> Result<(Algorithm, DecodingKey), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = match header.kid {
            Some(kid) if kid != self.kid => kid,
            _ => return Ok((self.alg, self.decoding.clone())),
        };
        match self.peers.lock().get(&kid) {
            Some(PeerKey::Known(alg, key)) => return Ok((*alg, key.clone())),
            Some(PeerKey::Unknown(at)) if at.elapsed() < UNKNOWN_KID_TTL => {
                return Err(format!("unknown key id {kid}"));
            }
            _ => {}
        }
        let Some(directory) = self.directory.read().clone() else {
            return Err(format!("unknown key id {kid}"));
        };
        let found = directory.lookup(&kid).await?;
        let peer = match found {
            // The id is the hash of the key: a record under another key's id is refused.
            Some((alg, public)) if key_id(&public) == kid => match alg.as_str() {
                "ES256" => PeerKey::Known(Algorithm::ES256, DecodingKey::from_ec_der(&public)),
                "RS256" => PeerKey::Known(Algorithm::RS256, DecodingKey::from_rsa_der(&public)),
                _ => PeerKey::Unknown(Instant::now()),
            },
            _ => PeerKey::Unknown(Instant::now()),
        };
        let mut peers = self.peers.lock();
        if peers.len() >= PEER_KEYS {
            peers.clear();
        }
        peers.insert(kid.clone(), peer.clone());
        match peer {
            PeerKey::Known(alg, key) => Ok((alg, key)),
            PeerKey::Unknown(_) => Err(format!("unknown key id {kid}")),
        }
    }

    /// The service name (JWT audience).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Access token lifetime in seconds.
    pub fn expiration(&self) -> u64 {
        self.expiration
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| AuthError::Key(format!("signing a token: {e}")))
    }

    /// Sign an access token for `sub` (empty = anonymous) granting `access`; returns the
    /// token and its issue time.
    pub fn issue(&self, sub: &str, access: Vec<AccessEntry>) -> Result<(String, u64), AuthError> {
        let now = now_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_string(),
            aud: self.service.clone(),
            exp: now + self.expiration,
            nbf: now.saturating_sub(1),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        Ok((self.sign(&claims)?, now))
    }

    /// Sign a refresh token (Docker's "identity token") for a user.
    pub fn issue_refresh(&self, sub: &str) -> Result<String, AuthError> {
        let now = now_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_string(),
            aud: format!("{}{REFRESH_AUDIENCE_SUFFIX}", self.service),
            exp: now + self.refresh_expiration,
            nbf: now.saturating_sub(1),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access: Vec::new(),
        };
        self.sign(&claims)
    }

    fn validation(&self, alg: Algorithm, audience: &str) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v
    }

    /// Verify an access token: signature, algorithm, issuer, audience, expiry, not-before.
    pub async fn verify(&self, token: &str) -> Result<Claims, String> {
        let (alg, key) = self.key_for(token).await?;
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation(alg, &self.service))
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }

    /// Verify a refresh token; returns its subject.
    pub async fn verify_refresh(&self, token: &str) -> Result<String, String> {
        let (alg, key) = self.key_for(token).await?;
        let aud = format!("{}{REFRESH_AUDIENCE_SUFFIX}", self.service);
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation(alg, &aud))
            .map(|d| d.claims.sub)
            .map_err(|e| e.to_string())
    }
}

/// A new private key as PKCS#8 DER.
fn generate(alg: Algorithm) -> Result<Vec<u8>, AuthError> {
    let fail = |e| AuthError::Key(format!("generating a signing key: {e}"));
    match alg {
        Algorithm::ES256 => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(fail)
        }
        _ => {
            let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(fail)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().map_err(fail)?;
            Ok(der.as_ref().to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(dir: &Path, alg: &str) -> TokenKeys {
        let cfg = TokenConfig {
            algorithm: alg.into(),
            ..TokenConfig::default()
        };
        TokenKeys::load(&cfg, dir).unwrap()
    }

    #[test]
    fn scopes_parse() {
        let e = AccessEntry::parse_scope("repository:team/app:pull,push").unwrap();
        assert_eq!(e.kind, "repository");
        assert_eq!(e.name, "team/app");
        assert_eq!(e.requested_actions(), vec![Action::Pull, Action::Push]);
        let e = AccessEntry::parse_scope("repository(plugin):localhost:5000/x:*").unwrap();
        assert_eq!(e.kind, "repository");
        assert_eq!(e.name, "localhost:5000/x");
        assert_eq!(e.requested_actions(), Action::ALL.to_vec());
        assert_eq!(e.to_scope(), "repository:localhost:5000/x:*");
        assert!(AccessEntry::parse_scope("nonsense").is_none());
        assert!(AccessEntry::parse_scope("repository::pull").is_none());
    }

    #[tokio::test]
    async fn keys_generate_persist_sign_and_verify() {
        use std::os::unix::fs::PermissionsExt;
        for alg in ["ES256", "RS256"] {
            let dir = tempfile::tempdir().unwrap();
            let k = keys(dir.path(), alg);
            let file = dir
                .path()
                .join(format!("token-signing-key-{}.pem", alg.to_lowercase()));
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{alg}");
            let entry = AccessEntry::parse_scope("repository:a/b:pull").unwrap();
            let (t, _) = k.issue("alice", vec![entry.clone()]).unwrap();
            let c = k.verify(&t).await.unwrap();
            assert_eq!(c.sub, "alice");
            assert_eq!(c.access, vec![entry]);
            // The same key after a restart verifies the old token.
            let again = keys(dir.path(), alg);
            assert!(again.verify(&t).await.is_ok(), "{alg}");
            // A refresh token is no access token, and the reverse.
            let r = k.issue_refresh("alice").unwrap();
            assert!(k.verify(&r).await.is_err());
            assert_eq!(k.verify_refresh(&r).await.unwrap(), "alice");
            assert!(k.verify_refresh(&t).await.is_err());
            // Another key's tokens are rejected.
            let other = tempfile::tempdir().unwrap();
            assert!(keys(other.path(), alg).verify(&t).await.is_err());
        }
    }

    /// A directory in memory, as the metadata database keeps it.
    #[derive(Default)]
    struct Directory(
        parking_lot::Mutex<HashMap<String, (String, Vec<u8>)>>,
        std::sync::atomic::AtomicUsize,
    );

    #[async_trait::async_trait]
    impl KeyDirectory for Directory {
        async fn publish(&self, kid: &str, alg: &str, public: &[u8]) -> Result<(), String> {
            self.0
                .lock()
                .entry(kid.to_string())
                .or_insert((alg.to_string(), public.to_vec()));
            Ok(())
        }
        async fn lookup(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>, String> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(self.0.lock().get(kid).cloned())
        }
    }

    #[tokio::test]
    async fn replicas_verify_each_others_tokens_through_the_directory() {
        let directory = Arc::new(Directory::default());
        let (da, db, dc) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        // Each replica generated its own key (and of two kinds).
        let a = keys(da.path(), "ES256");
        let b = keys(db.path(), "RS256");
        let outsider = keys(dc.path(), "ES256");
        let (ta, _) = a.issue("alice", vec![]).unwrap();
        let tb = b.issue_refresh("bob").unwrap();
        let (tx, _) = outsider.issue("mallory", vec![]).unwrap();
        // Unshared, a replica knows only its own key.
        assert!(b.verify(&ta).await.is_err());
        a.share(directory.clone()).await.unwrap();
        b.share(directory.clone()).await.unwrap();
        assert_eq!(b.verify(&ta).await.unwrap().sub, "alice");
        assert_eq!(a.verify_refresh(&tb).await.unwrap(), "bob");
        assert!(
            a.verify(&tb).await.is_err(),
            "a refresh token is no access token"
        );
        // A key nobody published is refused, and asked for once in a while only.
        let asked = directory.1.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..5 {
            assert!(a.verify(&tx).await.is_err());
        }
        assert_eq!(
            directory.1.load(std::sync::atomic::Ordering::Relaxed),
            asked + 1
        );
        // A record whose key does not hash to its id is refused.
        let forged_kid = outsider.kid().to_string();
        directory
            .0
            .lock()
            .insert(forged_kid, ("RS256".into(), b.public.clone()));
        let c = keys(tempfile::tempdir().unwrap().path(), "ES256");
        c.share(directory.clone()).await.unwrap();
        assert!(c.verify(&tx).await.is_err());
    }
}
