//! Connection hygiene and bounded memory against the real binary: trickling and silent
//! connections are closed while other clients are served, stalled uploads free their
//! permits (and keep their sessions), a per-address connection cap, and a budget of manifest
//! bytes in flight that keeps a burst of large PUTs within a stated memory bound.

mod common;

use std::time::{Duration, Instant};

use common::*;
use oci_core::Digest;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server has closed `s` (a read returns EOF or an error) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response (e.g. 408); keep reading to the close
        }
    }
}

/// How [`trickle`] ended.
struct Trickled {
    /// Time from the first byte.
    after: Duration,
    /// Bytes written.
    sent: usize,
    /// What the server answered, if it did.
    answer: Option<String>,
    /// Whether the server closed the connection (or a write failed).
    closed: bool,
}

/// Write `bytes` one at a time, 500 ms apart, until they run out, `limit` passes, or the
/// server answers or closes the connection.
async fn trickle(
    c: &mut TcpStream,
    bytes: impl IntoIterator<Item = u8>,
    limit: Duration,
) -> Trickled {
    let started = Instant::now();
    let (mut sent, mut answer, mut closed) = (0, None, false);
    for b in bytes {
        if started.elapsed() >= limit {
            break;
        }
        if c.write_all(&[b]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                answer = Some(String::from_utf8_lossy(&buf[..n]).to_string());
                break;
            }
            Err(_) => {}
        }
    }
    Trickled {
        after: started.elapsed(),
        sent,
        answer,
        closed,
    }
}

/// 40 connections that trickle their request head one byte every 500 ms and 40 that send
/// nothing: all are closed by the header (2 s) and idle (3 s) timeouts, while a client
/// making ordinary requests meanwhile is served promptly throughout.
#[tokio::test]
async fn trickling_and_silent_connections_are_cut_off_while_others_are_served() {
    let s = Server::start_with_env(&[
        ("REGISTRY_HTTP_TIMEOUTS_HEADER", "2"),
        ("REGISTRY_HTTP_TIMEOUTS_IDLE", "3"),
    ])
    .await;
    let addr = format!("127.0.0.1:{}", s.port);
    let mut tricklers = Vec::new();
    for _ in 0..40 {
        let addr = addr.clone();
        tricklers.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(&addr).await.unwrap();
            let head =
                b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            let t = trickle(&mut c, head.iter().copied(), Duration::from_secs(60)).await;
            // Sent the whole head without being cut off: the timeout did not hold.
            (t.closed || t.answer.is_some()).then_some(t.after)
        }));
    }
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Others are served meanwhile.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        let r = s.req(Method::GET, "/v2/").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("slowest ordinary request while 80 connections hung: {worst:?}");
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    for t in tricklers {
        let cut = t.await.unwrap().expect("a trickling head was cut off");
        assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
    }
    for mut c in silent {
        assert!(
            closed_within(&mut c, Duration::from_secs(3)).await,
            "silent connection kept"
        );
    }
}

/// With four upload permits, four clients sending one byte every 500 ms hold them only
/// until the body stall limit (2 s without 1 KiB) cuts them; their sessions keep what
/// arrived, and other pushes go through.
#[tokio::test]
async fn stalled_uploads_free_their_permits_and_keep_their_sessions() {
    let s = Server::start_with_env(&[
        ("REGISTRY_HTTP_MAXCONCURRENTUPLOADS", "4"),
        ("REGISTRY_HTTP_TIMEOUTS_BODY", "2"),
        ("REGISTRY_HTTP_TIMEOUTS_BODYMINBYTES", "1024"),
    ])
    .await;
    let addr = format!("127.0.0.1:{}", s.port);
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let r = s
            .req(Method::POST, "/v2/slow/app/blobs/uploads/")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        sessions.push(r.headers()["location"].to_str().unwrap().to_string());
    }
    let mut trickles = Vec::new();
    for loc in &sessions {
        let path = loc
            .trim_start_matches(&format!("http://{addr}"))
            .to_string();
        let addr = addr.clone();
        trickles.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
            );
            c.write_all(head.as_bytes()).await.unwrap();
            trickle(&mut c, std::iter::repeat(b'x'), Duration::from_secs(20)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Every permit is held: another push waits its turn.
    let blob = b"a blob pushed while others trickle".to_vec();
    let d = Digest::sha256_of(&blob);
    let push = || {
        s.req(
            Method::POST,
            &format!("/v2/other/app/blobs/uploads/?digest={d}"),
        )
        .body(blob.clone())
        .send()
    };
    assert_eq!(
        push().await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    for t in trickles {
        let Trickled {
            after,
            sent,
            answer,
            ..
        } = t.await.unwrap();
        assert!(after < Duration::from_secs(5), "held for {after:?}");
        if let Some(text) = answer {
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        }
        assert!(sent >= 1);
    }
    assert_eq!(push().await.unwrap().status(), StatusCode::CREATED);
    // The sessions survive with what arrived, and can be resumed.
    for loc in &sessions {
        let r = s.req(Method::GET, loc).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "session of {loc}");
        let range = r.headers()["range"].to_str().unwrap().to_string();
        let end: u64 = range.trim_start_matches("0-").parse().unwrap();
        let rest = vec![b'x'; 10];
        let r = s
            .req(Method::PATCH, loc)
            .header("content-range", format!("{}-{}", end + 1, end + 10))
            .body(rest)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "resumed {loc}");
    }
}

/// A connection to `addr` from the loopback address `from` (127.0.0.0/8 is all local on
/// Linux), so that the cap is counted apart from the test client's own pooled connections.
async fn connect_from(from: &str, addr: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(addr.parse().unwrap()).await.unwrap()
}

/// `http.maxconnsperip`: the connection beyond the cap is closed at once, while another
/// address is still served; one of the others going away makes room.
#[tokio::test]
async fn connections_per_client_address_are_capped() {
    let s = Server::start_with_env(&[("REGISTRY_HTTP_MAXCONNSPERIP", "3")]).await;
    let addr = format!("127.0.0.1:{}", s.port);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", &addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect_from("127.0.0.2", &addr).await;
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    let get = async |mut c: TcpStream| {
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).await.unwrap();
        text
    };
    let other = get(connect_from("127.0.0.3", &addr).await).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = get(connect_from("127.0.0.2", &addr).await).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// The registry process's resident anonymous memory in bytes (`RssAnon`: its heap and
/// stacks, not the pages of files it maps, such as the SQLite database).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// A valid OCI image manifest of about `size` bytes (padded with an annotation) for a
/// config and layer already in the repository; `seed` makes each one distinct.
fn padded_manifest(config: &Digest, config_size: usize, size: usize, seed: usize) -> Vec<u8> {
    let base = image_manifest(config, config_size, &[], None);
    let mut m: serde_json::Value = serde_json::from_slice(&base).unwrap();
    let pad_len = size - base.len() - 64;
    let mut pad = format!("{seed:08}-");
    pad.extend((pad.len()..pad_len).map(|i| (b'a' + (i * 7 % 26) as u8) as char));
    m["annotations"] = serde_json::json!({ "org.example.pad": pad });
    let out = serde_json::to_vec(&m).unwrap();
    assert!(out.len() <= 4 << 20, "{}", out.len());
    out
}

/// 64 concurrent PUTs of 4 MiB manifests: the default budget of manifest bytes in flight
/// (64 MiB) admits some at a time and answers the rest 429 with `Retry-After`; clients that
/// retry all get 201. Resident memory grows by at most 384 MiB at the peak (64 bodies in
/// flight at once would take 256 MiB for the bodies alone, and each takes about five times
/// its size while it is parsed and stored), and comes back within 128 MiB of its baseline
/// within 30 s of the burst.
#[tokio::test]
async fn a_burst_of_large_manifest_puts_stays_within_a_memory_bound() {
    let s = Server::start().await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = s.push_blob("burst/app", config).await;
    let size = (4 << 20) - 256;
    let manifests: Vec<Vec<u8>> = (0..64)
        .map(|i| padded_manifest(&cd, config.len(), size, i))
        .collect();
    let pid = s.pid();
    for _ in 0..3 {
        s.req(Method::GET, "/v2/").send().await.unwrap();
    }
    let baseline = rss(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // The burst's clients come and go: their connections close when they are done.
    let burst_client = reqwest::Client::new();
    let started = Instant::now();
    let mut puts = Vec::new();
    for (i, m) in manifests.into_iter().enumerate() {
        let req = burst_client
            .put(s.url(&format!("/v2/burst/app/manifests/m{i}")))
            .header("content-type", OCI_MANIFEST);
        puts.push(tokio::spawn(async move {
            let mut refused = 0;
            loop {
                let r = req
                    .try_clone()
                    .unwrap()
                    .body(m.clone())
                    .send()
                    .await
                    .unwrap();
                if r.status() != StatusCode::TOO_MANY_REQUESTS {
                    return (r.status(), r.text().await.unwrap(), refused);
                }
                refused += 1;
                let wait: u64 = header(&r, "retry-after").parse().expect("Retry-After");
                assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
                tokio::time::sleep(Duration::from_millis(wait * 1000 / 4)).await;
            }
        }));
    }
    let mut refused = 0;
    for p in puts {
        let (status, text, n) = p.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{text}");
        refused += n;
    }
    let took = started.elapsed();
    drop(burst_client);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();
    // Freed memory goes back to the system within a few seconds (jemalloc's decay).
    let settling = Instant::now();
    let mut after = rss(pid);
    while after.saturating_sub(baseline) > 128 << 20 && settling.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss(pid);
    }
    let settled = settling.elapsed();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "64 x 4 MiB manifest PUTs in {took:?}, {refused} answered 429 first; RSS baseline {:.0} MiB, peak {:.0} MiB (+{:.0}), {settled:?} later {:.0} MiB (+{:.0})",
        mib(baseline),
        mib(peak),
        mib(peak - baseline),
        mib(after),
        mib(after.saturating_sub(baseline)),
    );
    assert!(refused > 0, "the budget never refused a PUT");
    assert!(
        peak - baseline <= 384 << 20,
        "peak growth {:.0} MiB",
        mib(peak - baseline)
    );
    assert!(
        after.saturating_sub(baseline) <= 128 << 20,
        "after the burst: +{:.0} MiB",
        mib(after.saturating_sub(baseline))
    );
}

/// A small budget (`http.maxmanifestbytesinflight`): two PUTs whose bodies are still
/// arriving hold it, the third is answered 429 with `Retry-After` before its body is read,
/// and once they complete it goes through.
#[tokio::test]
async fn manifest_bytes_beyond_the_budget_are_answered_429() {
    let s = Server::start_with_env(&[("REGISTRY_HTTP_MAXMANIFESTBYTESINFLIGHT", "8388608")]).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = s.push_blob("budget/app", config).await;
    let addr = format!("127.0.0.1:{}", s.port);
    let mut open = Vec::new();
    for i in 0..2 {
        let m = padded_manifest(&cd, config.len(), 3 << 20, i);
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT /v2/budget/app/manifests/held{i} HTTP/1.1\r\nHost: x\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            m.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&m[..1000]).await.unwrap();
        open.push((c, m));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = padded_manifest(&cd, config.len(), 3 << 20, 2);
    let r = s
        .put_manifest("budget/app", "third", OCI_MANIFEST, &third)
        .await;
    assert_eq!(header(&r, "retry-after"), "1");
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    // A small manifest still fits in what is left.
    let small = image_manifest(&cd, config.len(), &[], None);
    let r = s
        .put_manifest("budget/app", "small", OCI_MANIFEST, &small)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for (mut c, m) in open {
        c.write_all(&m[1000..]).await.unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    }
    let r = s
        .put_manifest("budget/app", "third", OCI_MANIFEST, &third)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}
