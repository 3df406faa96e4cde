//! External registry records: validation, sealing secrets, the JSON views, and clients
//! built from records (cached until the record changes).

use std::collections::HashMap;
use std::sync::Arc;

use registry_meta::{ExternalRegistryRecord, MetaStore};
use serde::{Deserialize, Serialize};

use crate::config::AuthSpec;
use crate::error::{ExternalError, Result};
use crate::remote::{Auth, Endpoint, RegistryType, Remote};
use crate::secret::SecretBox;

/// Retries per request for replication and tests.
pub const REPLICATION_RETRIES: u32 = 3;

/// Body of `POST` and `PUT /api/v1/registry/external[/{id}]`. On `PUT`, absent fields keep
/// their values, and an `auth` of the same type without a secret keeps the stored secret.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryInput {
    /// Unique name.
    pub name: Option<String>,
    /// Registry type: `generic` (default), `harbor`, `ecr`, `dockerhub`, `gcr` or `acr`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Endpoint URL (defaults per type).
    pub endpoint: Option<String>,
    /// Credentials (`password` and `token` are write-only).
    #[schema(default = json!(null))]
    pub auth: Option<AuthSpec>,
    /// Skip TLS verification / allow plain HTTP.
    pub insecure: Option<bool>,
}

pub use oci_core::time::{now, rfc3339};

/// An external registry as the API returns it: never the secret, only whether there is one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RegistryView {
    /// Identifier.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Registry type: `generic`, `harbor`, `ecr`, `dockerhub`, `gcr` or `acr`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Endpoint URL.
    pub endpoint: String,
    /// Credentials, without the secret.
    pub auth: AuthView,
    /// A password or token is stored (encrypted).
    pub has_secret: bool,
    /// Skip TLS verification / allow plain HTTP.
    pub insecure: bool,
    /// Created at (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

/// The credentials of a registry as returned: type and user name, never the secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuthView {
    /// `none`, `basic` or `bearer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Basic user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// The public view of a record: never the secret, only whether there is one.
pub fn view(rec: &ExternalRegistryRecord) -> RegistryView {
    RegistryView {
        id: rec.id.clone(),
        name: rec.name.clone(),
        kind: rec.kind.clone(),
        endpoint: rec.endpoint.clone(),
        auth: AuthView {
            kind: rec.auth_kind.clone(),
            username: rec.username.clone(),
        },
        has_secret: rec.secret.is_some(),
        insecure: rec.insecure,
        created_at: rfc3339(rec.created_at),
        updated_at: rfc3339(rec.updated_at),
    }
}

/// Plain credentials from an auth block, with the type's default user name.
pub fn auth_from_spec(kind: RegistryType, spec: Option<&AuthSpec>) -> Result<Auth> {
    let Some(spec) = spec else {
        return Ok(Auth::None);
    };
    match spec.kind.as_str() {
        "" | "none" => Ok(Auth::None),
        "basic" => {
            let username = spec
                .username
                .clone()
                .or_else(|| kind.default_username().map(str::to_string))
                .ok_or_else(|| ExternalError::Invalid("basic auth needs a username".into()))?;
            let password = spec
                .password
                .clone()
                .ok_or_else(|| ExternalError::Invalid("basic auth needs a password".into()))?;
            Ok(Auth::Basic { username, password })
        }
        "bearer" => Ok(Auth::Bearer(spec.token.clone().ok_or_else(|| {
            ExternalError::Invalid("bearer auth needs a token".into())
        })?)),
        other => Err(ExternalError::Invalid(format!(
            "unknown auth type {other:?} (none, basic, bearer)"
        ))),
    }
}

/// Records, secrets and clients.
pub struct Registries {
    meta: Arc<dyn MetaStore>,
    secrets: SecretBox,
    clients: parking_lot::Mutex<HashMap<String, (i64, Arc<Remote>)>>,
}

impl Registries {
    /// The secrets key's fingerprint (see [`SecretBox::fingerprint`]).
    pub fn key_fingerprint(&self) -> &str {
        self.secrets.fingerprint()
    }

    /// Over a metadata store, with the secrets key.
    pub fn new(meta: Arc<dyn MetaStore>, secrets: SecretBox) -> Registries {
        Registries {
            meta,
            secrets,
            clients: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Every record.
    pub async fn list(&self) -> Result<Vec<ExternalRegistryRecord>> {
        Ok(self.meta.external_registries().await?)
    }

    /// A record by id, or by name.
    pub async fn get(&self, id_or_name: &str) -> Result<ExternalRegistryRecord> {
        let all = self.list().await?;
        all.iter()
            .find(|r| r.id == id_or_name)
            .or_else(|| all.iter().find(|r| r.name == id_or_name))
            .cloned()
            .ok_or_else(|| ExternalError::NotFound(format!("no external registry {id_or_name:?}")))
    }

    /// Create (`existing` = `None`) or update a record from an API body.
    pub async fn save(
        &self,
        existing: Option<ExternalRegistryRecord>,
        input: RegistryInput,
    ) -> Result<ExternalRegistryRecord> {
        let t = now();
        let mut rec = existing.clone().unwrap_or_else(|| ExternalRegistryRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: String::new(),
            kind: "generic".into(),
            endpoint: String::new(),
            auth_kind: "none".into(),
            username: None,
            secret: None,
            insecure: false,
            created_at: t,
            updated_at: t,
        });
        if let Some(name) = input.name {
            rec.name = name.trim().to_string();
        }
        if rec.name.is_empty() || rec.name.len() > 128 {
            return Err(ExternalError::Invalid(
                "name must be 1 to 128 characters".into(),
            ));
        }
        if let Some(k) = input.kind {
            rec.kind = k;
        }
        let kind = RegistryType::parse(&rec.kind)?;
        if let Some(e) = input.endpoint {
            rec.endpoint = e;
        }
        if rec.endpoint.trim().is_empty() {
            rec.endpoint = kind
                .default_endpoint()
                .ok_or_else(|| {
                    ExternalError::Invalid(format!(
                        "a {} registry needs an endpoint",
                        kind.as_str()
                    ))
                })?
                .to_string();
        }
        if let Some(i) = input.insecure {
            rec.insecure = i;
        }
        let endpoint = Endpoint::parse(&rec.endpoint)?;
        Remote::check_endpoint(&endpoint, rec.insecure)?;
        rec.endpoint = endpoint.url();
        if let Some(spec) = input.auth {
            let keeps_secret = existing.is_some()
                && spec.kind == rec.auth_kind
                && spec.password.is_none()
                && spec.token.is_none();
            if keeps_secret {
                if spec.username.is_some() {
                    rec.username = spec.username.clone();
                }
            } else {
                match auth_from_spec(kind, Some(&spec))? {
                    Auth::None => {
                        rec.auth_kind = "none".into();
                        rec.username = None;
                        rec.secret = None;
                    }
                    Auth::Basic { username, password } => {
                        rec.auth_kind = "basic".into();
                        rec.username = Some(username);
                        rec.secret = Some(self.secrets.seal(&rec.id, password.as_bytes())?);
                    }
                    Auth::Bearer(token) => {
                        rec.auth_kind = "bearer".into();
                        rec.username = None;
                        rec.secret = Some(self.secrets.seal(&rec.id, token.as_bytes())?);
                    }
                }
            }
        }
        let all = self.list().await?;
        if all.iter().any(|r| r.name == rec.name && r.id != rec.id) {
            return Err(ExternalError::Conflict(format!(
                "an external registry named {:?} exists",
                rec.name
            )));
        }
        rec.updated_at = t;
        self.meta.put_external_registry(&rec).await?;
        let prefix = format!("{}#", rec.id);
        self.clients.lock().retain(|k, _| !k.starts_with(&prefix));
        tracing::info!(id = %rec.id, name = %rec.name, endpoint = %rec.endpoint, "external registry saved");
        Ok(rec)
    }

    /// Delete a record.
    pub async fn delete(&self, id: &str) -> Result<()> {
        if !self.meta.delete_external_registry(id).await? {
            return Err(ExternalError::NotFound(format!(
                "no external registry {id:?}"
            )));
        }
        let prefix = format!("{id}#");
        self.clients.lock().retain(|k, _| !k.starts_with(&prefix));
        tracing::info!(id, "external registry deleted");
        Ok(())
    }

    /// A client for a record (secrets decrypted in memory only), cached per record version.
    pub fn remote_for(&self, rec: &ExternalRegistryRecord, retries: u32) -> Result<Arc<Remote>> {
        let key = format!("{}#{retries}", rec.id);
        if let Some((v, r)) = self.clients.lock().get(&key)
            && *v == rec.updated_at
        {
            return Ok(r.clone());
        }
        let kind = RegistryType::parse(&rec.kind)?;
        let secret = rec
            .secret
            .as_ref()
            .map(|s| self.secrets.open(&rec.id, s))
            .transpose()?;
        let auth = match (rec.auth_kind.as_str(), secret) {
            ("basic", Some(password)) => Auth::Basic {
                username: rec.username.clone().unwrap_or_default(),
                password,
            },
            ("bearer", Some(token)) => Auth::Bearer(token),
            _ => Auth::None,
        };
        let remote = Arc::new(Remote::new(
            kind,
            Endpoint::parse(&rec.endpoint)?,
            auth,
            rec.insecure,
            retries,
        )?);
        self.clients
            .lock()
            .insert(key, (rec.updated_at, remote.clone()));
        Ok(remote)
    }

    /// A client for the registry with this id or name.
    pub async fn remote(&self, id_or_name: &str, retries: u32) -> Result<Arc<Remote>> {
        let rec = self.get(id_or_name).await?;
        self.remote_for(&rec, retries)
    }
}
