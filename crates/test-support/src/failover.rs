//! A TCP load balancer for replica tests: each connection goes to the first target that
//! accepts it, so killing one replica sends the client's next connection to another.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A failover proxy on a loopback port.
pub struct FailoverProxy {
    /// The port clients connect to.
    pub port: u16,
    up: Arc<AtomicU64>,
    per_target: Arc<Vec<AtomicU64>>,
}

impl FailoverProxy {
    /// Proxy to `targets` (loopback ports), preferring them in order.
    pub fn start(targets: &[u16]) -> FailoverProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicU64::new(0));
        let per_target: Arc<Vec<AtomicU64>> =
            Arc::new(targets.iter().map(|_| AtomicU64::new(0)).collect());
        let targets = targets.to_vec();
        let (up2, per2) = (up.clone(), per_target.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Some((i, server)) = targets
                    .iter()
                    .enumerate()
                    .find_map(|(i, t)| TcpStream::connect(("127.0.0.1", *t)).ok().map(|s| (i, s)))
                else {
                    continue;
                };
                per2[i].fetch_add(1, Ordering::SeqCst);
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Some(up2.clone()),
                );
                pipe(server, client, None);
            }
        });
        FailoverProxy {
            port,
            up,
            per_target,
        }
    }

    /// Bytes clients have sent through the proxy.
    pub fn bytes_up(&self) -> u64 {
        self.up.load(Ordering::SeqCst)
    }

    /// Connections handed to target `i`.
    pub fn connections_to(&self, i: usize) -> u64 {
        self.per_target[i].load(Ordering::SeqCst)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(c) = &count {
                c.fetch_add(n as u64, Ordering::SeqCst);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}
