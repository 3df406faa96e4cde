//! Two stateless hyperregistry replicas on one PostgreSQL database, one Redis and one S3
//! bucket, behind a failover load balancer: a replica killed in the middle of a push loses
//! nothing; the client's retry continues the upload on the other replica.

use test_support::failover::FailoverProxy;
use test_support::redis::RedisServer;
use test_support::s3::S3Server;
use test_support::*;

/// The settings every replica shares: metadata, coordination, blob storage.
fn shared_env(redis: &RedisServer, s3: &S3Server) -> Vec<(String, String)> {
    let mut env = s3.registry_env();
    env.push((
        "REGISTRY_DATABASE_URL".into(),
        test_support::postgres::database_url(),
    ));
    env.push(("REGISTRY_REDIS_URL".into(), redis.url()));
    // Each replica has its own data directory: they share the secrets key by setting.
    env.push((
        "REGISTRY_EXTERNAL_SECRETKEY".into(),
        "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".into(),
    ));
    env
}

#[test]
fn a_push_survives_the_death_of_its_replica() {
    if !require_tool("skopeo") || !test_support::postgres::available() {
        return;
    }
    let (Some(redis), Some(s3)) = (RedisServer::start(), S3Server::start()) else {
        return;
    };
    let env = shared_env(&redis, &s3);
    let mut a = Registry::hyper_with_env(&env);
    let b = Registry::hyper_with_env(&env);

    // The image to push: one 150 MiB layer (chunked uploads, 64 MiB per PATCH).
    let src = Registry::hyper();
    let dir = tempfile::tempdir().unwrap();
    let layer = big_layout(dir.path(), "t", 150 << 20);
    sh(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", dir.path().display()),
            &format!("docker://{}/src/big:1", src.host()),
        ],
    );
    let hb = Hb::new();
    hb.ok(&["pull", &format!("{}/src/big:1", src.host())]);

    let lb = FailoverProxy::start(&[a.port, b.port]);
    let dest = format!("{}/dst/big:1", lb.host());
    let out = std::thread::scope(|scope| {
        let push = scope.spawn(|| hb.run(&["push", &format!("{}/src/big:1", src.host()), &dest]));
        // Kill replica A in the middle of the second 64 MiB chunk.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while lb.bytes_up() < 90 << 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "the push never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        a.kill();
        push.join().unwrap()
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the push failed:\n{stderr}");
    assert!(
        lb.connections_to(1) > 0,
        "the push was finished by replica B"
    );
    assert!(
        stderr.contains("resuming"),
        "the upload resumed on B from the offset A had stored:\n{stderr}"
    );
    // Everything is served by the surviving replica, digests verified.
    assert_eq!(blob_sha256(&b.host(), "dst/big", &layer), layer);
    let hb2 = Hb::new();
    hb2.ok(&["pull", &format!("{}/dst/big:1", b.host())]);
    let stored = std::fs::read(hb2.root().join("blobs/sha256").join(layer.hex())).unwrap();
    assert_eq!(oci_core::Digest::sha256_of(&stored), layer);
}
