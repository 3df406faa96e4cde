//! Parallel gzip: the stream is cut into fixed-size blocks, each compressed on a worker
//! thread into its own gzip member, and the members written in order. Concatenated gzip
//! members are one valid gzip stream (RFC 1952), read by every gunzip, Go's `gzip.Reader`
//! (multistream by default) and containerd. The output depends only on the input and the
//! block size, so layers stay reproducible.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Uncompressed bytes per gzip member.
const BLOCK: usize = 1 << 20;

type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

/// A gzip writer compressing blocks on several threads.
pub struct ParallelGzip<W: Write> {
    inner: Option<W>,
    block: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    workers: Vec<JoinHandle<()>>,
    max_pending: usize,
}

impl<W: Write> ParallelGzip<W> {
    /// Compress into `inner` with `threads` workers (at least one).
    pub fn new(inner: W, threads: usize) -> ParallelGzip<W> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = rx.lock().expect("job queue").recv();
                        let Ok((data, reply)) = job else { return };
                        let mut enc = flate2::GzBuilder::new().write(
                            Vec::with_capacity(data.len() / 2),
                            flate2::Compression::fast(),
                        );
                        let out = enc.write_all(&data).and_then(|()| enc.finish());
                        let _ = reply.send(out);
                    }
                })
            })
            .collect();
        ParallelGzip {
            inner: Some(inner),
            block: Vec::with_capacity(BLOCK),
            jobs: Some(tx),
            pending: VecDeque::new(),
            workers,
            max_pending: threads * 2,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        while self.pending.len() >= self.max_pending {
            self.write_front()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let (reply, rx) = sync_channel(1);
        self.jobs
            .as_ref()
            .expect("not finished")
            .send((data, reply))
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.pending.push_back(rx);
        Ok(())
    }

    fn write_front(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let member = rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker stopped"))??;
            self.inner
                .as_mut()
                .expect("not finished")
                .write_all(&member)?;
        }
        Ok(())
    }

    /// Compress what is left, write every member, and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.block.is_empty() && self.pending.is_empty() {
            // An empty input still needs one (empty) gzip member.
            let enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
            self.inner
                .as_mut()
                .expect("not finished")
                .write_all(&enc.finish()?)?;
        }
        self.submit()?;
        while !self.pending.is_empty() {
            self.write_front()?;
        }
        Ok(self.inner.take().expect("finished once"))
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (BLOCK - self.block.len()).min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == BLOCK {
                self.submit()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let mut w = ParallelGzip::new(Vec::new(), 3);
        for piece in data.chunks(77_777) {
            w.write_all(piece).unwrap();
        }
        let gz = w.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        gz
    }

    #[test]
    fn members_decode_to_the_input_and_are_deterministic() {
        let data: Vec<u8> = (0..(3 * BLOCK + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let a = roundtrip(&data);
        let b = roundtrip(&data);
        assert_eq!(a, b, "same input, same bytes");
        roundtrip(&[]);
        roundtrip(b"small");
    }
}
