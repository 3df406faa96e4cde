//! Upload bodies that stall are cut off: a body that brings fewer than `min_bytes` in a
//! window of `window` fails with `TimedOut`, so a client trickling one byte every few
//! seconds cannot hold an upload permit (or a session lock) for as long as it likes. What
//! arrived before the cut stays in the upload session; the client can ask for its `Range`
//! and resume.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use tokio::time::{Instant, Sleep};

/// How slow an upload body may be (config `http.timeouts.body` and
/// `http.timeouts.bodyminbytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallLimit {
    /// Length of each window.
    pub window: Duration,
    /// Bytes each window must bring.
    pub min_bytes: u64,
}

/// A body stream that fails when a window brings fewer bytes than its [`StallLimit`].
pub struct StallGuard<S> {
    inner: S,
    limit: StallLimit,
    in_window: u64,
    deadline: Pin<Box<Sleep>>,
}

impl<S> StallGuard<S> {
    /// Watch `inner` from now on.
    pub fn new(inner: S, limit: StallLimit) -> StallGuard<S> {
        StallGuard {
            inner,
            limit,
            in_window: 0,
            deadline: Box::pin(tokio::time::sleep(limit.window)),
        }
    }
}

impl<S> Stream for StallGuard<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.in_window += chunk.len() as u64;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(other) => return Poll::Ready(other),
                Poll::Pending => {}
            }
            if this.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if this.in_window < this.limit.min_bytes {
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the upload stalled: {} byte(s) in the last {} s, below the minimum of {}",
                        this.in_window,
                        this.limit.window.as_secs_f64(),
                        this.limit.min_bytes
                    ),
                ))));
            }
            // Enough came in this window: start the next one, and poll again so that the
            // new deadline is registered with the waker.
            this.in_window = 0;
            let next = Instant::now() + this.limit.window;
            this.deadline.as_mut().reset(next);
        }
    }
}

/// The request body as a byte stream, cut off when it stalls by the policy's
/// [`crate::Policy::upload_stall`] (if any).
pub fn request_body(st: &crate::AppState, req: Request) -> registry_storage::ByteStream {
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    match st.policy.upload_stall {
        Some(limit) => Box::pin(StallGuard::new(body, limit)),
        None => Box::pin(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn limit() -> StallLimit {
        StallLimit {
            window: Duration::from_secs(10),
            min_bytes: 100,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_and_a_steady_body_is_not() {
        // One byte every 5 s: two bytes per 10 s window, below 100.
        let trickle = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some((Ok(Bytes::from_static(b"x")), n + 1))
        });
        let mut g = StallGuard::new(Box::pin(trickle), limit());
        let mut got = 0;
        let err = loop {
            match g.next().await.unwrap() {
                Ok(b) => got += b.len(),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(got <= 2, "{got}");

        // 200 bytes every 5 s, for a minute: never cut.
        let steady = futures::stream::unfold(0u32, |n| async move {
            if n == 12 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some((Ok(Bytes::from(vec![0u8; 200])), n + 1))
        });
        let g = StallGuard::new(Box::pin(steady), limit());
        let all: Vec<_> = g.collect().await;
        assert_eq!(all.len(), 12);
        assert!(all.iter().all(|r| r.is_ok()));
    }
}
