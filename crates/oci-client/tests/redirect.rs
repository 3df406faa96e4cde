//! Blob reads that the registry redirects to storage: plain HTTP (hyperregistry on S3 with
//! presigned redirects, served by s3s-fs) and HTTPS storage behind a plain-HTTP registry
//! (the plain client has no TLS roots, so the TLS client must take over).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::{ClientConfig, Reference, RegistryClient};
use oci_core::Digest;
use test_support::Registry;
use test_support::s3::S3Server;

use test_support::free_port;
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn follows_registry_redirects_to_plain_http_storage() {
    // The harness is blocking (it polls with a blocking HTTP client).
    let started = tokio::task::spawn_blocking(|| {
        let s3 = S3Server::start()?;
        let registry = Registry::hyper_s3(&s3, &[("REGISTRY_STORAGE_S3_REDIRECT", "true")]);
        Some((registry, s3))
    })
    .await
    .unwrap();
    let Some((registry, _s3)) = started else {
        return;
    };
    let blob = data(200_000);
    let digest = Digest::sha256_of(&blob);
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "http://{}/v2/app/blobs/uploads/?digest={digest}",
            registry.host()
        ))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The registry answers 307 to s3s-fs.
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = direct
        .get(format!("http://{}/v2/app/blobs/{digest}", registry.host()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);

    let client = RegistryClient::new(ClientConfig::default()).unwrap();
    let reference: Reference = format!("{}/app", registry.host()).parse().unwrap();
    assert_eq!(
        client.blob_size(&reference, &digest, false).await.unwrap(),
        Some(blob.len() as u64)
    );
    // hyperbuild pull: whole blob, and resumed with Range.
    let (resp, partial) = client.get_blob(&reference, &digest, 0).await.unwrap();
    assert!(!partial);
    assert_eq!(resp.bytes().await.unwrap(), blob);
    let (resp, partial) = client.get_blob(&reference, &digest, 1000).await.unwrap();
    assert!(partial);
    assert_eq!(resp.bytes().await.unwrap(), blob[1000..]);
    // starget: one range goes to storage, several are served by the registry.
    let one = client
        .get_blob_ranges(&reference, &digest, &[(10, 20)])
        .await
        .unwrap();
    assert_eq!(
        one,
        vec![(10, bytes::Bytes::copy_from_slice(&blob[10..30]))]
    );
    let two = client
        .get_blob_ranges(&reference, &digest, &[(10, 20), (5000, 7)])
        .await
        .unwrap();
    assert_eq!(
        two[1],
        (5000, bytes::Bytes::copy_from_slice(&blob[5000..5007]))
    );
}

#[tokio::test]
async fn follows_a_plain_http_registry_to_https_storage() {
    if !test_support::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    std::fs::write(
        p("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A test CA, and a certificate for localhost signed by it.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=hyper-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    // The TLS client trusts the platform's roots; point them at the test CA. (This
    // test binary's only other test does not use TLS.)
    // SAFETY: set before any client of this test exists; no other thread reads it meanwhile.
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca) };

    // HTTPS storage: `openssl s_server -HTTP` answers with files of its working directory
    // that hold a whole HTTP response. The response states its length: s_server closes
    // without a TLS close_notify, so a body read to the end of the connection would always
    // look truncated.
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let blob = data(300_000);
    let digest = Digest::sha256_of(&blob);
    let mut response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        blob.len()
    )
    .into_bytes();
    response.extend_from_slice(&blob);
    std::fs::write(www.join("blob"), &response).unwrap();
    let tls_port = free_port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-HTTP",
            "-accept",
            &tls_port.to_string(),
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .current_dir(&www)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "openssl s_server did not come up"
        );
        std::thread::sleep(Duration::from_millis(25));
    }

    // A plain-HTTP registry that sends blob reads to the HTTPS storage.
    let location = format!("https://localhost:{tls_port}/blob");
    let app = axum::Router::new().route(
        "/v2/{*path}",
        axum::routing::get(move || {
            let location = location.clone();
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, location)],
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = RegistryClient::new(ClientConfig::default()).unwrap();
    let reference: Reference = format!("127.0.0.1:{port}/app").parse().unwrap();
    // `openssl s_server` closes each connection without reading the whole request, so the
    // kernel may reset it before the last bytes of the response leave (seen about one run
    // in four): a truncated read is that server's, not the client's. A few tries; every
    // one that completes must carry the blob's exact bytes.
    let mut failures = Vec::new();
    let mut fetched = None;
    for _ in 0..5 {
        match client.get_blob(&reference, &digest, 0).await {
            Ok((resp, partial)) => {
                assert!(!partial);
                match resp.bytes().await {
                    Ok(body) => {
                        fetched = Some(body);
                        break;
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let body = fetched.unwrap_or_else(|| panic!("no complete read in 5 tries: {failures:?}"));
    assert_eq!(Digest::sha256_of(&body), digest);
}
