//! `hyperbuild login` and `logout`: credentials checked against the registry, then saved.

use std::io::Read;

use anyhow::{Context, bail};
use oci_client::{ClientConfig, Credential, Reference, RegistryClient};

use crate::ctx::Ctx;

pub(crate) async fn login(
    ctx: &Ctx,
    registry: &str,
    username: Option<String>,
    password: Option<String>,
    stdin: bool,
) -> anyhow::Result<()> {
    let username = match username {
        Some(u) => u,
        None => {
            eprint!("Username: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    let password = match (password, stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => rpassword::prompt_password("Password: ")?,
    };
    if username.is_empty() || password.is_empty() {
        bail!("a user name and a password are required");
    }
    let credential = Credential::Basic { username, password };
    // Check the credentials against the registry before saving them.
    let cfg = ClientConfig {
        insecure_registries: ctx.insecure.clone(),
        credentials: ctx.credentials.clone(),
        explicit: Some(credential.clone()),
        ..ClientConfig::default()
    };
    let client = RegistryClient::new(cfg)?;
    let probe: Reference = format!("{registry}/login-probe")
        .parse()
        .context("invalid registry name")?;
    let url = format!("{}/v2/", client.base_url(&probe));
    let resp = client
        .send(&probe, &[], "checking credentials", &|http| {
            Ok(http.get(&url))
        })
        .await
        .with_context(|| format!("logging in to {registry}"))?;
    if !resp.status().is_success() {
        bail!(
            "logging in to {registry}: the registry answered {}",
            resp.status()
        );
    }
    ctx.credentials.login(registry, &credential)?;
    println!("Login Succeeded");
    Ok(())
}

/// Forget the credentials for `registry`.
pub(crate) fn logout(ctx: &Ctx, registry: &str) -> anyhow::Result<()> {
    if ctx.credentials.logout(registry)? {
        println!("Removed login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}
