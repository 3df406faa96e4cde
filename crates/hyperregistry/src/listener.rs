//! The HTTP listener: accepts connections, caps them per client address, and closes the
//! ones that hold the server without using it.
//!
//! Each connection's socket is watched ([`Watched`]): while no request is in progress, a
//! connection that sends nothing for `idle` is closed, and one that has begun a request head
//! must finish it within `header` of its first byte (a client trickling its headers one
//! byte at a time is cut off). While a request runs, the socket is not timed here: a slow
//! upload body is the API's business (`registry_api::stall`), and a download only writes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// What the listener enforces on every connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hygiene {
    /// Time to receive a whole request head, from its first byte.
    pub header: Option<Duration>,
    /// Time a connection with no request in progress may stay silent.
    pub idle: Option<Duration>,
    /// Connections from one client address at once (0: no cap).
    pub max_per_ip: usize,
}

/// How long graceful shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// Serve `app` on `listener` until `shutdown` resolves, then let requests in flight finish
/// (for at most 30 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    hygiene: Hygiene,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = IpSlot::take(&per_ip, peer.ip(), hygiene.max_per_ip) else {
            tracing::info!(client = %peer.ip(), "connection refused: too many from this address");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Arc::new(ConnState::new());
        let io = Watched::new(tcp, conn.clone(), hygiene);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            let guard = InRequest::begin(conn.clone());
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            async move {
                let resp = app.oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| GuardedBody { body, guard }))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(client = %peer, error = %e, "connection closed");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => {
            tracing::warn!("requests still in flight after {}s: closing", DRAIN.as_secs());
        }
    }
    Ok(())
}

/// One connection counted against its client address; given back on drop.
struct IpSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = map.lock();
        let n = m.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What a connection is doing, shared by its socket and its requests.
struct ConnState {
    inner: Mutex<ConnInner>,
}

struct ConnInner {
    /// Requests whose response has not been sent whole.
    active: usize,
    /// When the connection last became idle (accepted, or its last response sent).
    idle_since: Instant,
    /// When the first byte of the next request head arrived, if one has.
    head_since: Option<Instant>,
    /// The socket's reader, woken when the connection becomes idle (its deadline changes).
    reader: Option<Waker>,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            inner: Mutex::new(ConnInner {
                active: 0,
                idle_since: Instant::now(),
                head_since: None,
                reader: None,
            }),
        }
    }
}

/// A request in progress on its connection, from its parsed head until its response body
/// is sent (or dropped).
struct InRequest(Arc<ConnState>);

impl InRequest {
    fn begin(conn: Arc<ConnState>) -> InRequest {
        {
            let mut s = conn.inner.lock();
            s.active += 1;
            s.head_since = None;
        }
        InRequest(conn)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let mut s = self.0.inner.lock();
        s.active -= 1;
        if s.active == 0 {
            s.idle_since = Instant::now();
            if let Some(w) = s.reader.take() {
                w.wake();
            }
        }
    }
}

/// A response body that keeps its request counted as in progress until it is done.
struct GuardedBody {
    body: Body,
    #[allow(dead_code)]
    guard: InRequest,
}

impl HttpBody for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket whose reads fail with `TimedOut` when the connection idles or trickles its
/// request head past the [`Hygiene`] limits.
struct Watched {
    tcp: TcpStream,
    conn: Arc<ConnState>,
    hygiene: Hygiene,
    timer: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(tcp: TcpStream, conn: Arc<ConnState>, hygiene: Hygiene) -> Watched {
        Watched {
            tcp,
            conn,
            hygiene,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
        }
    }

    /// The deadline that applies now, and why: none while a request runs.
    fn deadline(&self, s: &ConnInner) -> Option<(Instant, &'static str)> {
        if s.active > 0 {
            return None;
        }
        match s.head_since {
            Some(t) => self
                .hygiene
                .header
                .map(|d| (t + d, "request head not received in time")),
            None => self
                .hygiene
                .idle
                .map(|d| (s.idle_since + d, "idle connection")),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut s = this.conn.inner.lock();
                    if s.active == 0 && s.head_since.is_none() {
                        s.head_since = Some(Instant::now());
                    }
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let deadline = {
            let mut s = this.conn.inner.lock();
            s.reader = Some(cx.waker().clone());
            this.deadline(&s)
        };
        let Some((at, why)) = deadline else {
            return Poll::Pending;
        };
        if this.timer.deadline() != at {
            this.timer.as_mut().reset(at);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
