//! One external registry, ready to talk to: its type's defaults, its endpoint, its (plain,
//! in-memory only) credentials and an `oci-client` [`RegistryClient`] configured for it.

use std::path::PathBuf;
use std::time::Duration;

use oci_client::credentials::CredentialStore;
use oci_client::{ClientConfig, ClientError, Credential, Reference, RegistryClient};
use serde::{Deserialize, Serialize};

use crate::error::{ExternalError, Result};

/// What kind of registry it is. Types only change defaults; every type speaks the same
/// distribution API through the same client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryType {
    /// Any registry implementing the distribution API v2.
    Generic,
    /// Harbor: a generic v2 registry (robot accounts are Basic auth `robot$name`).
    Harbor,
    /// Amazon ECR: Basic user name defaults to `AWS` (password: `aws ecr get-login-password`,
    /// valid 12 hours; not refreshed here).
    Ecr,
    /// Docker Hub: endpoint defaults to `https://registry-1.docker.io`, and one-component
    /// repository names read from it get `library/`.
    Dockerhub,
    /// Google Container Registry: endpoint defaults to `https://gcr.io`, Basic user name to
    /// `oauth2accesstoken` (password: an access token; not refreshed here).
    Gcr,
    /// Azure Container Registry: Basic user name defaults to
    /// `00000000-0000-0000-0000-000000000000` (password: `az acr login --expose-token`).
    Acr,
}

impl RegistryType {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryType::Generic => "generic",
            RegistryType::Harbor => "harbor",
            RegistryType::Ecr => "ecr",
            RegistryType::Dockerhub => "dockerhub",
            RegistryType::Gcr => "gcr",
            RegistryType::Acr => "acr",
        }
    }

    /// Parse a stored or requested type name.
    pub fn parse(s: &str) -> Result<RegistryType> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            ExternalError::Invalid(format!(
                "unknown registry type {s:?} (generic, harbor, ecr, dockerhub, gcr, acr)"
            ))
        })
    }

    /// The endpoint used when none is given, if the type has one.
    pub fn default_endpoint(self) -> Option<&'static str> {
        match self {
            RegistryType::Dockerhub => Some("https://registry-1.docker.io"),
            RegistryType::Gcr => Some("https://gcr.io"),
            _ => None,
        }
    }

    /// The Basic user name used when none is given.
    pub fn default_username(self) -> Option<&'static str> {
        match self {
            RegistryType::Ecr => Some("AWS"),
            RegistryType::Gcr => Some("oauth2accesstoken"),
            RegistryType::Acr => Some("00000000-0000-0000-0000-000000000000"),
            _ => None,
        }
    }
}

/// Credentials in the clear (memory only; `Debug` redacts them).
#[derive(Clone, PartialEq)]
pub enum Auth {
    /// Anonymous.
    None,
    /// Basic user name and password (or token used as a password).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A pre-issued token sent as `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// A parsed endpoint: scheme and `host[:port]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `true` for `http://`.
    pub plain_http: bool,
    /// `host[:port]`.
    pub host: String,
}

impl Endpoint {
    /// Parse `https://host[:port]`, `http://host[:port]` or a bare `host[:port]` (HTTPS).
    /// Path prefixes are not supported: the distribution API lives at `/v2/` of the host.
    pub fn parse(s: &str) -> Result<Endpoint> {
        let s = s.trim();
        let (plain_http, rest) = if let Some(r) = s.strip_prefix("http://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (false, r)
        } else if s.contains("://") {
            return Err(ExternalError::Invalid(format!(
                "endpoint {s:?}: only http:// and https:// are supported"
            )));
        } else {
            (false, s)
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty()
            || host.contains('/')
            || host.contains('@')
            || host.contains(char::is_whitespace)
        {
            return Err(ExternalError::Invalid(format!(
                "endpoint {s:?}: expected http(s)://host[:port] without a path"
            )));
        }
        Ok(Endpoint {
            plain_http,
            host: host.to_string(),
        })
    }

    /// The URL form.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.plain_http { "http" } else { "https" },
            self.host
        )
    }

    fn is_loopback(&self) -> bool {
        let host = self
            .host
            .rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map_or(self.host.as_str(), |(h, _)| h);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

/// An external registry with a client configured for it.
#[derive(Clone)]
pub struct Remote {
    /// Registry type.
    pub kind: RegistryType,
    /// Endpoint.
    pub endpoint: Endpoint,
    /// Whether TLS verification is skipped / plain HTTP allowed.
    pub insecure: bool,
    /// Whether credentials are configured.
    pub has_auth: bool,
    /// The client (tokens cached per scope).
    pub client: RegistryClient,
}

/// Result of `POST .../test`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TestReport {
    /// `GET /v2/` got an HTTP answer.
    pub reachable: bool,
    /// The stored credentials were accepted (or none were needed).
    pub authenticated: bool,
    /// What happened.
    pub message: String,
}

impl Remote {
    /// Check an endpoint against the insecure flag: plain HTTP to a non-loopback host needs it.
    pub fn check_endpoint(endpoint: &Endpoint, insecure: bool) -> Result<()> {
        if endpoint.plain_http && !insecure && !endpoint.is_loopback() {
            return Err(ExternalError::Invalid(format!(
                "{} is plain HTTP: set insecure to true to allow it",
                endpoint.url()
            )));
        }
        Ok(())
    }

    /// A client for a registry. `max_retries` applies to every request.
    pub fn new(
        kind: RegistryType,
        endpoint: Endpoint,
        auth: Auth,
        insecure: bool,
        max_retries: u32,
    ) -> Result<Remote> {
        Remote::check_endpoint(&endpoint, insecure)?;
        let explicit = match &auth {
            Auth::Basic { username, password } => Some(Credential::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let cfg = ClientConfig {
            insecure_registries: if endpoint.plain_http {
                vec![endpoint.host.clone()]
            } else {
                Vec::new()
            },
            // Never the process's own docker/podman credentials: only what was configured.
            credentials: CredentialStore {
                read_paths: Vec::new(),
                write_path: PathBuf::from("/dev/null"),
            },
            explicit,
            max_retries,
            base_delay: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(10),
        };
        let mut client = RegistryClient::new(cfg)?;
        if let Auth::Bearer(token) = &auth {
            client = client.with_static_bearer(token);
        }
        if insecure && !endpoint.plain_http {
            client = client.with_invalid_certs_accepted();
        }
        Ok(Remote {
            kind,
            endpoint,
            insecure,
            has_auth: auth != Auth::None,
            client,
        })
    }

    /// The repository to use on this registry for `repo` when reading from it (Docker Hub's
    /// official images live under `library/`).
    pub fn source_repository(&self, repo: &str) -> String {
        if self.kind == RegistryType::Dockerhub && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        }
    }

    /// A client reference to `repository` at `reference` (a tag, or a digest when it has `:`).
    pub fn reference(&self, repository: &str, reference: &str) -> Result<Reference> {
        let (tag, digest) = if reference.contains(':') {
            let d = reference
                .parse()
                .map_err(|e| ExternalError::Invalid(format!("digest {reference:?}: {e}")))?;
            (None, Some(d))
        } else {
            (Some(reference.to_string()), None)
        };
        Ok(Reference {
            registry: self.endpoint.host.clone(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// Reachability (`GET /v2/` answers at all) and credentials (a 401 challenge answered with
    /// the stored auth gets a 2xx).
    pub async fn test(&self) -> TestReport {
        let probe = self
            .reference("library/probe", "latest")
            .expect("valid tag");
        let url = format!("{}/v2/", self.client.base_url(&probe));
        let anonymous = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(self.insecure)
            .build();
        let first = match anonymous {
            Ok(c) => c.get(&url).send().await,
            Err(e) => {
                return TestReport {
                    reachable: false,
                    authenticated: false,
                    message: format!("creating an HTTP client: {e}"),
                };
            }
        };
        let status = match first {
            Ok(resp) => resp.status(),
            Err(e) => {
                return TestReport {
                    reachable: false,
                    authenticated: false,
                    message: format!("GET {url}: {e}"),
                };
            }
        };
        if status.is_success() {
            return TestReport {
                reachable: true,
                authenticated: true,
                message: if self.has_auth {
                    "the registry allows anonymous access; credentials were not needed".into()
                } else {
                    "the registry allows anonymous access".into()
                },
            };
        }
        if status != reqwest::StatusCode::UNAUTHORIZED {
            return TestReport {
                reachable: true,
                authenticated: false,
                message: format!("GET {url} answered {status}: not a distribution v2 registry?"),
            };
        }
        let answer = self
            .client
            .send(&probe, &[], "checking credentials", &|http| {
                Ok(http.get(&url))
            })
            .await;
        match answer {
            Ok(resp) if resp.status().is_success() => TestReport {
                reachable: true,
                authenticated: true,
                message: "credentials accepted".into(),
            },
            Ok(resp) => TestReport {
                reachable: true,
                authenticated: false,
                message: format!("GET {url} with credentials answered {}", resp.status()),
            },
            Err(ClientError::Unauthorized { message, .. }) => TestReport {
                reachable: true,
                authenticated: false,
                message: if self.has_auth {
                    format!("credentials refused: {message}")
                } else {
                    format!("the registry requires credentials: {message}")
                },
            },
            Err(e) => TestReport {
                reachable: true,
                authenticated: false,
                message: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:5000/").unwrap();
        assert!(e.plain_http);
        assert_eq!(e.host, "127.0.0.1:5000");
        let e = Endpoint::parse("registry.example.com").unwrap();
        assert!(!e.plain_http);
        assert_eq!(e.url(), "https://registry.example.com");
        assert!(Endpoint::parse("https://h/path").is_err());
        assert!(Endpoint::parse("ftp://h").is_err());
        let remote_http = Endpoint::parse("http://registry.example.com").unwrap();
        assert!(Remote::check_endpoint(&remote_http, false).is_err());
        assert!(Remote::check_endpoint(&remote_http, true).is_ok());
    }

    #[test]
    fn types() {
        assert_eq!(
            RegistryType::parse("dockerhub").unwrap(),
            RegistryType::Dockerhub
        );
        assert!(RegistryType::parse("quay").is_err());
        let hub = Remote::new(
            RegistryType::Dockerhub,
            Endpoint::parse(RegistryType::Dockerhub.default_endpoint().unwrap()).unwrap(),
            Auth::None,
            false,
            0,
        )
        .unwrap();
        assert_eq!(hub.source_repository("busybox"), "library/busybox");
        assert_eq!(hub.source_repository("me/app"), "me/app");
    }
}
