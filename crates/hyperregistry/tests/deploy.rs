//! `deploy/compose.yaml` describes a working deployment: the settings it gives its registry
//! replicas, with the service addresses replaced by this test's PostgreSQL, Redis and S3
//! server, start two replicas that serve each other's pushes; nginx balances over exactly the
//! replicas the compose file defines.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use reqwest::StatusCode;
use test_support::redis::RedisServer;
use test_support::s3::S3Server;

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `${NAME:-default}` → `default`, as compose resolves it when NAME is unset.
fn resolve_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("unterminated ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map(|(_, d)| d).unwrap_or(""));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The registry replicas' environment in the compose file (the `x-registry` anchor).
fn compose_registry_env() -> BTreeMap<String, String> {
    let cfg = config::Config::builder()
        .add_source(config::File::from_str(
            &deploy_file("compose.yaml"),
            config::FileFormat::Yaml,
        ))
        .build()
        .expect("compose.yaml parses");
    cfg.get_table("x-registry.environment")
        .expect("x-registry.environment")
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_uppercase(),
                resolve_defaults(&v.into_string().unwrap()),
            )
        })
        .collect()
}

#[test]
fn nginx_balances_over_the_compose_replicas() {
    let compose = deploy_file("compose.yaml");
    let nginx = deploy_file("nginx.conf");
    for replica in ["registry-1", "registry-2"] {
        assert!(
            compose.contains(&format!("\n  {replica}:\n")),
            "{replica} is a service"
        );
        assert!(
            nginx.contains(&format!("server {replica}:5000")),
            "nginx sends to {replica}"
        );
    }
    assert!(
        nginx.contains("client_max_body_size 0"),
        "no upload size limit"
    );
    assert!(
        nginx.contains("proxy_request_buffering off"),
        "uploads stream"
    );
}

#[tokio::test]
async fn compose_settings_run_two_replicas_on_postgres_redis_and_s3() {
    if !test_support::postgres::available() {
        return;
    }
    let (Some(redis), Some(s3)) = (RedisServer::start(), S3Server::start()) else {
        return;
    };
    let compose = compose_registry_env();
    for key in [
        "REGISTRY_DATABASE_URL",
        "REGISTRY_REDIS_URL",
        "REGISTRY_STORAGE",
        "REGISTRY_STORAGE_S3_BUCKET",
        "REGISTRY_STORAGE_S3_ENDPOINT",
        "REGISTRY_EXTERNAL_SECRETKEY",
    ] {
        assert!(compose.contains_key(key), "compose.yaml sets {key}");
    }
    assert_eq!(compose["REGISTRY_STORAGE"], "s3");
    assert!(compose["REGISTRY_DATABASE_URL"].starts_with("postgres://"));
    assert!(compose["REGISTRY_REDIS_URL"].starts_with("redis://"));

    // Service addresses and credentials become this test's; every other value is used as is.
    let s3_env: BTreeMap<String, String> = s3.registry_env().into_iter().collect();
    let mut env: Vec<(String, String)> = Vec::new();
    for (key, value) in &compose {
        let value = match key.as_str() {
            "REGISTRY_HTTP_ADDR" => continue,
            "REGISTRY_DATABASE_URL" => test_support::postgres::database_url(),
            "REGISTRY_REDIS_URL" => redis.url(),
            k if k.starts_with("REGISTRY_STORAGE_S3_")
                && matches!(
                    k,
                    "REGISTRY_STORAGE_S3_ENDPOINT"
                        | "REGISTRY_STORAGE_S3_BUCKET"
                        | "REGISTRY_STORAGE_S3_ACCESSKEY"
                        | "REGISTRY_STORAGE_S3_SECRETKEY"
                ) =>
            {
                s3_env
                    .get(k)
                    .unwrap_or_else(|| panic!("the test S3 server has no {k}"))
                    .clone()
            }
            _ => value.clone(),
        };
        env.push((key.clone(), value));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = Server::start_with_env(&env_refs).await;
    let b = Server::start_with_env(&env_refs).await;

    let layer = bytes(6 << 20, 42);
    let (manifest, digest) = a.push_image("deploy/app", "1", &layer).await;
    let r = b
        .req(reqwest::Method::GET, "/v2/deploy/app/manifests/1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), digest.to_string());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &manifest[..]);
    let ld = oci_core::Digest::sha256_of(&layer);
    let r = b
        .req(reqwest::Method::GET, &format!("/v2/deploy/app/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(oci_core::Digest::sha256_of(&r.bytes().await.unwrap()), ld);
    // The blobs live in the bucket, not in the replicas' data directories.
    assert_eq!(count_files(&a.root().join("blobs")), 0);
}
