//! Response bodies, including one that is cut off halfway on purpose.
//!
//! A truncated response must reach the client as "status line, headers, half the body, then
//! the connection closes". Simply failing the body stream after the first half is not enough:
//! hyper buffers writes and drops its buffer when a body fails, so the client would usually
//! see no response at all (a different fault, [`crate::FaultKind::Drop`]). So the cut-off
//! body yields its half and then waits until the connection's IO has been flushed, which
//! [`ConnIo`] reports through a [`CutSignal`]; only then does it fail and hyper closes the
//! connection behind the delivered bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Tells a cut-off body that everything written so far has left hyper's buffers.
#[derive(Default)]
pub(crate) struct CutSignal {
    armed: AtomicBool,
    flushed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl CutSignal {
    fn on_flushed(&self) {
        if self.armed.load(Ordering::Acquire) {
            self.flushed.store(true, Ordering::Release);
            let waker = self
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The error a cut-off body ends with; hyper closes the connection on it.
#[derive(Debug)]
pub(crate) struct CutOff;

impl std::fmt::Display for CutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response deliberately truncated by fault injection")
    }
}

impl std::error::Error for CutOff {}

pub(crate) enum SimBody {
    /// The whole body in one frame (`None` once sent, or for an empty body).
    Full(Option<Bytes>),
    /// Announces `full_len` bytes, sends `half`, then fails once the half is flushed.
    CutOff {
        half: Option<Bytes>,
        full_len: u64,
        signal: Arc<CutSignal>,
    },
}

impl SimBody {
    pub(crate) fn full(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            Self::Full(None)
        } else {
            Self::Full(Some(bytes))
        }
    }

    /// The first half of `bytes` (at least one byte, never all of them).
    pub(crate) fn cut_off(bytes: Bytes, signal: Arc<CutSignal>) -> Self {
        let full_len = bytes.len() as u64;
        let half = bytes.slice(..(bytes.len() / 2).max(1).min(bytes.len().saturating_sub(1)));
        Self::CutOff {
            half: Some(half),
            full_len,
            signal,
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = CutOff;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CutOff>>> {
        match self.get_mut() {
            Self::Full(chunk) => Poll::Ready(chunk.take().map(|bytes| Ok(Frame::data(bytes)))),
            Self::CutOff { half, signal, .. } => {
                if let Some(bytes) = half.take() {
                    signal.armed.store(true, Ordering::Release);
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                if signal.flushed.load(Ordering::Acquire) {
                    return Poll::Ready(Some(Err(CutOff)));
                }
                *signal.waker.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(cx.waker().clone());
                // The flush may have happened between the check and storing the waker.
                if signal.flushed.load(Ordering::Acquire) {
                    return Poll::Ready(Some(Err(CutOff)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            // Exact, so hyper sends `Content-Length` of the whole body: the client then knows
            // for certain that it got less.
            Self::CutOff { full_len, .. } => SizeHint::with_exact(*full_len),
        }
    }
}

/// A connection's socket, reporting flushes to the connection's [`CutSignal`]. hyper calls
/// `poll_flush` on its IO only after writing out its whole buffer.
pub(crate) struct ConnIo {
    inner: TokioIo<TcpStream>,
    signal: Arc<CutSignal>,
}

impl ConnIo {
    pub(crate) fn new(stream: TcpStream, signal: Arc<CutSignal>) -> Self {
        Self {
            inner: TokioIo::new(stream),
            signal,
        }
    }
}

impl hyper::rt::Read for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            this.signal.on_flushed();
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}
