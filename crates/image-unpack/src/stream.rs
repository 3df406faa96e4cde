//! Readers between the decompressor and the tar parser.
//!
//! [`Hashing`] computes the diff_id (sha256 of the uncompressed stream) while it flows.
//! [`Guard`] follows the tar block structure alongside the `tar` crate and refuses absurd
//! extension headers *before* the `tar` crate buffers them whole (it reads GNU long names and
//! PAX headers into memory without a bound). It also keeps the raw PAX data of the entry being
//! applied, so PAX records are parsed by length prefix ([`crate::pax`]), and refuses archives
//! whose PAX `size` the `tar` crate would read differently from POSIX.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use crate::paths::MAX_NAME_LEN;

/// Largest PAX extended header (`x` or `g`) accepted.
pub const MAX_PAX_LEN: u64 = 1 << 20;
/// Largest GNU long name / long link header accepted (a name plus its NUL).
pub const MAX_LONG_NAME_LEN: u64 = MAX_NAME_LEN as u64 + 1;

const BLOCK: usize = 512;

/// Counts and hashes every byte read through it.
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: oci_core::Hasher,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: oci_core::Algorithm::Sha256.hasher(),
            bytes: 0,
        }
    }

    /// Read the rest of the stream (tar padding after the end marker) and return digest and length.
    pub(crate) fn finish(mut self) -> io::Result<(oci_core::Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.bytes))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A limit broken in the tar structure, carried inside an `io::Error` out of the `tar` crate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    Limit {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{0}")]
    Malformed(String),
}

/// What the guard shares with the applier.
#[derive(Default)]
pub(crate) struct Shared {
    /// Raw PAX data (`x` header) that describes the entry whose header was read last.
    pub current_pax: Option<Vec<u8>>,
}

enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// GNU sparse extension blocks follow; then `size` bytes of data.
    SparseExt { size: u64 },
    /// Inside entry data (`left` bytes including padding); the first `collect` bytes are kept.
    Data { left: u64, collect: u64, pax: bool },
    /// End of archive reached (or a header the `tar` crate will refuse): stop looking.
    Done,
}

/// Follows tar headers in the stream read by the `tar` crate; see the module docs.
pub(crate) struct Guard<R> {
    inner: R,
    state: State,
    block: [u8; BLOCK],
    filled: usize,
    /// PAX data read so far (for the `x` header being read).
    pax_buf: Vec<u8>,
    /// PAX data waiting for the next real entry.
    pending_pax: Option<Vec<u8>>,
    /// `size` override for the next real entry, as the `tar` crate computes it.
    pending_size: Option<u64>,
    shared: Rc<RefCell<Shared>>,
}

impl<R: Read> Guard<R> {
    pub(crate) fn new(inner: R, shared: Rc<RefCell<Shared>>) -> Self {
        Guard {
            inner,
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            pax_buf: Vec::new(),
            pending_pax: None,
            pending_size: None,
            shared,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    fn observe(&mut self, mut data: &[u8]) -> Result<(), GuardError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header | State::SparseExt { .. } => {
                    let k = (BLOCK - self.filled).min(data.len());
                    self.block[self.filled..self.filled + k].copy_from_slice(&data[..k]);
                    self.filled += k;
                    data = &data[k..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.on_block()?;
                    }
                }
                State::Data { left, collect, pax } => {
                    let k = (*left).min(data.len() as u64) as usize;
                    let c = (*collect).min(k as u64) as usize;
                    if c > 0 {
                        self.pax_buf.extend_from_slice(&data[..c]);
                        *collect -= c as u64;
                    }
                    *left -= k as u64;
                    data = &data[k..];
                    if *left == 0 {
                        let pax = *pax;
                        self.state = State::Header;
                        if pax {
                            self.on_pax_done()?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn on_block(&mut self) -> Result<(), GuardError> {
        if let State::SparseExt { size } = self.state {
            // GNU sparse extension block: 21 sparse entries, then the is-extended flag.
            if self.block[504] != 1 {
                self.start_data(size, false);
            }
            return Ok(());
        }
        let b = &self.block;
        if b.iter().all(|x| *x == 0) {
            // The `tar` crate stops at the first zero block.
            self.state = State::Done;
            return Ok(());
        }
        let Some(size) = numeric(&b[124..136]) else {
            // The `tar` crate refuses this header too.
            self.state = State::Done;
            return Ok(());
        };
        let typeflag = b[156];
        let ustar = &b[257..263] == b"ustar\0" && &b[263..265] == b"00";
        let gnu = &b[257..263] == b"ustar " && &b[263..265] == b" \0";
        let recognized = ustar || gnu;
        let extension_type = matches!(typeflag, b'L' | b'K' | b'x' | b'g');
        match typeflag {
            b'L' | b'K' if recognized => {
                if size > MAX_LONG_NAME_LEN {
                    return Err(GuardError::Limit {
                        what: "GNU long name header",
                        size,
                        limit: MAX_LONG_NAME_LEN,
                    });
                }
                self.start_data(size, false);
            }
            b'x' | b'g' => {
                if size > MAX_PAX_LEN {
                    return Err(GuardError::Limit {
                        what: "PAX extended header",
                        size,
                        limit: MAX_PAX_LEN,
                    });
                }
                if typeflag == b'x' && recognized {
                    if self.pending_pax.is_some() {
                        // The `tar` crate refuses this as well.
                        self.state = State::Done;
                        return Ok(());
                    }
                    self.pax_buf.clear();
                    self.start_data(size, true);
                } else {
                    self.entry_header();
                    self.start_data(size, false);
                }
            }
            _ => {
                // A real entry: the pending PAX size (if any) applies, as in the `tar` crate.
                let size = match self.pending_size.take() {
                    Some(s) if !extension_type => s,
                    _ => size,
                };
                self.entry_header();
                if typeflag == b'S' && gnu && self.block[482] == 1 {
                    self.state = State::SparseExt { size };
                } else {
                    self.start_data(size, false);
                }
            }
        }
        Ok(())
    }

    /// A header the `tar` crate yields as an entry: hand it its PAX data.
    fn entry_header(&mut self) {
        self.pending_size = None;
        self.shared.borrow_mut().current_pax = self.pending_pax.take();
    }

    fn start_data(&mut self, size: u64, pax: bool) {
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if padded == 0 {
            self.state = State::Header;
            if pax {
                // An empty PAX header: nothing pending.
                self.pending_pax = Some(Vec::new());
            }
        } else {
            self.state = State::Data {
                left: padded,
                collect: if pax { size } else { 0 },
                pax,
            };
        }
    }

    fn on_pax_done(&mut self) -> Result<(), GuardError> {
        let data = std::mem::take(&mut self.pax_buf);
        let posix = crate::pax::parse(&data).map_err(GuardError::Malformed)?;
        let tar_crate = crate::pax::tar_crate_size(&data);
        if posix.size != tar_crate {
            return Err(GuardError::Malformed(format!(
                "ambiguous PAX size record ({:?} by length prefix, {:?} by line)",
                posix.size, tar_crate
            )));
        }
        self.pending_size = tar_crate;
        self.pending_pax = Some(data);
        Ok(())
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }
}

/// A tar numeric field: octal text, or base-256 when the high bit is set (as the `tar` crate reads it).
fn numeric(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = 0;
        for b in &field[field.len() - 8..] {
            n = (n << 8) | u64::from(*b);
        }
        return Some(n);
    }
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let s = std::str::from_utf8(&field[..end]).ok()?;
    u64::from_str_radix(s.trim(), 8).ok()
}
