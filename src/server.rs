//! Serving connections: hyper's HTTP/1.1 connection builder under our own accept loop, so that
//! a client cannot hold connections (and file descriptors) for free.
//!
//! - **Header-read timeout**: a connection must deliver its first request head within
//!   `header_read_timeout` of being accepted, and a later head within `header_read_timeout` of
//!   its first byte; otherwise it is closed (half-sent request lines, slowloris).
//! - **Idle keep-alive timeout**: a connection with no request in progress and no bytes of a
//!   new one for `keep_alive_timeout` is closed.
//! - **Connection cap**: at most `max_connections` connections are open (a number kept below the
//!   process's file-descriptor limit). When the cap is reached, a new connection is still
//!   accepted and the connection that has waited longest without a request in progress is
//!   closed to make room (so a probe gets in while idle or half-sent connections fill the cap);
//!   when every connection is busy with a request, new ones wait in the kernel's accept backlog.
//! - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`, ...) pause the accept loop briefly instead
//!   of spinning.
//!
//! The minimum request-body rate is a middleware (`api::edge::min_body_rate`), and the work
//! slots (`--max-concurrency`) are `startup::app`'s; this module only knows connections.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// How long connections may take and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
}

/// File descriptors kept free for everything but client connections (stores, model files,
/// webhook and database connections, logs).
pub const FD_RESERVE: u64 = 256;

/// A new connection beyond the cap is accepted (making room by closing the longest waiting one)
/// only while the overshoot is below this; beyond it the accept loop waits.
const OVERSHOOT: usize = 64;

/// Makes glibc's `malloc` hand every block of 1 MiB or more back to the system when it is freed.
/// By default glibc raises that threshold (from 128 KiB) to the size of the largest block freed
/// so far, up to 32 MiB, so after one large request its buffers are carved from per-thread
/// arenas that keep their pages: the peak memory of later large requests grew to over twice the
/// first one's (a 132 MB Zeek log, `scripts/bench-zeek.sh`: 155 MB peak on a fresh server,
/// 329 MB after three posts; with the threshold fixed at 1 MiB, 139 MB after three). Blocks
/// below 1 MiB (the Zeek reader's batches, most buffers) still reuse arena memory, so a request
/// does not page-fault all of its buffers afresh. Elsewhere (another libc) it does nothing.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called at startup, before the
    // server takes requests.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force
/// (`None` where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap in force: the configured one, lowered to stay [`FD_RESERVE`] (plus the
/// database pool) below the file-descriptor limit.
pub fn connection_cap(configured: usize, fd_limit: Option<u64>, extra_reserve: u64) -> usize {
    let Some(limit) = fd_limit else {
        return configured.max(1);
    };
    let room = limit.saturating_sub(FD_RESERVE + extra_reserve + OVERSHOOT as u64);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (idle connections are closed at once) and returns when every connection is gone.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut last_error_log: Option<Instant> = None;
    'accept: loop {
        // At the cap with nothing to close, new connections wait in the backlog.
        while registry.open.load(Ordering::Acquire) >= limits.max_connections + OVERSHOOT {
            let closed = registry.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if registry.open.load(Ordering::Acquire) < limits.max_connections + OVERSHOOT {
                break;
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'accept,
                _ = &mut closed => {}
            }
        }
        // `biased`: the shutdown future is polled first, so its first poll (which installs the
        // signal handlers) happens before any connection is taken.
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break 'accept,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or buffers: closing connections (timeouts, the cap) frees
                // them; retrying at once would only spin.
                let now = Instant::now();
                if last_error_log.is_none_or(|t| now - t >= Duration::from_secs(5)) {
                    tracing::error!(error = %e, "accept failed; pausing the accept loop");
                    last_error_log = Some(now);
                }
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break 'accept,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
        };
        let open = registry.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > limits.max_connections {
            registry.evict_longest_waiting();
        }
        let conn = Conn::new(registry.clone());
        tokio::spawn(serve_connection(
            stream,
            conn,
            app.clone(),
            limits,
            stop_rx.clone(),
        ));
    }
    // New connections are refused from here on; those open finish what they started.
    drop(listener);
    drain(&registry, stop_tx).await
}

/// Tells every connection to finish and waits until all are closed.
async fn drain(registry: &Registry, stop: watch::Sender<bool>) -> io::Result<()> {
    let _ = stop.send(true);
    loop {
        let closed = registry.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if registry.open.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        closed.await;
    }
}

/// Errors that concern only the connection being accepted (it was reset before we got it).
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    app: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        conn: conn.clone(),
    });
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = RequestGuard::start(service_conn.clone());
        let app = app.clone();
        async move {
            let response = app
                .oneshot(req.map(Body::new))
                .await
                .unwrap_or_else(|never| match never {});
            // The request is in progress until the last byte of its answer is handed over.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                }))
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None);
    // Boxed so it (and the socket) can be dropped before the connection is counted closed.
    let mut connection = Box::pin(builder.serve_connection(io, service));
    let mut stopping = false;
    loop {
        let wake_at = conn
            .deadline(&limits)
            .unwrap_or_else(|| Instant::now() + limits.header_read_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            changed = stop.changed(), if !stopping => {
                let _ = changed;
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            // A request ended: the deadline moves.
            _ = conn.answered.notified() => {}
            _ = conn.kill.notified() => {
                if conn.idle() {
                    tracing::debug!("connection closed to make room under the connection cap");
                    break;
                }
            }
            _ = tokio::time::sleep_until(wake_at) => {
                if conn.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("connection closed: no complete request head in time, or idle");
                    break;
                }
            }
        }
    }
    drop(connection);
    conn.close();
}

/// Every open connection: how many, and those waiting for a request (oldest first), which the
/// cap may close.
#[derive(Default)]
struct Registry {
    open: AtomicUsize,
    closed: Notify,
    next_id: AtomicU64,
    waiting: Mutex<BTreeMap<(Instant, u64), Arc<Notify>>>,
}

impl Registry {
    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Instant, u64), Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the connection that has waited longest for a request to close.
    fn evict_longest_waiting(&self) {
        let victim = self.waiting().pop_first();
        if let Some((_, kill)) = victim {
            kill.notify_one();
        }
    }
}

/// Where a connection is between requests.
struct Phase {
    /// Requests whose answers are not fully handed over yet.
    in_flight: usize,
    /// Since when no request has been in progress.
    waiting_since: Instant,
    /// When the first byte of the next request head arrived (none yet: `None`).
    head_started: Option<Instant>,
    /// Whether a request was ever received on this connection.
    served_any: bool,
}

struct Conn {
    id: u64,
    registry: Arc<Registry>,
    kill: Arc<Notify>,
    answered: Notify,
    phase: Mutex<Phase>,
}

impl Conn {
    fn new(registry: Arc<Registry>) -> Arc<Self> {
        let now = Instant::now();
        let conn = Arc::new(Self {
            id: registry.next_id.fetch_add(1, Ordering::Relaxed),
            registry,
            kill: Arc::new(Notify::new()),
            answered: Notify::new(),
            phase: Mutex::new(Phase {
                in_flight: 0,
                waiting_since: now,
                head_started: None,
                served_any: false,
            }),
        });
        conn.registry
            .waiting()
            .insert((now, conn.id), conn.kill.clone());
        conn
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_bytes(&self) {
        let mut p = self.phase();
        if p.in_flight == 0 && p.head_started.is_none() {
            p.head_started = Some(Instant::now());
        }
    }

    fn on_request(&self) {
        let mut p = self.phase();
        if p.in_flight == 0 {
            self.registry.waiting().remove(&(p.waiting_since, self.id));
        }
        p.in_flight += 1;
        p.head_started = None;
        p.served_any = true;
    }

    fn on_answered(&self) {
        let mut p = self.phase();
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            p.waiting_since = Instant::now();
            p.head_started = None;
            self.registry
                .waiting()
                .insert((p.waiting_since, self.id), self.kill.clone());
            self.answered.notify_one();
        }
    }

    fn idle(&self) -> bool {
        self.phase().in_flight == 0
    }

    /// When this connection must be closed unless a request arrives; `None` while one is in progress.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let p = self.phase();
        if p.in_flight > 0 {
            return None;
        }
        Some(match (p.served_any, p.head_started) {
            (false, _) => p.waiting_since + limits.header_read_timeout,
            (true, Some(started)) => started + limits.header_read_timeout,
            (true, None) => p.waiting_since + limits.keep_alive_timeout,
        })
    }

    fn close(&self) {
        let p = self.phase();
        if p.in_flight == 0 {
            self.registry.waiting().remove(&(p.waiting_since, self.id));
        }
        drop(p);
        self.registry.open.fetch_sub(1, Ordering::AcqRel);
        self.registry.closed.notify_waiters();
    }
}

/// Marks a request in progress from its head until its answer is handed over (or dropped).
struct RequestGuard(Arc<Conn>);

impl RequestGuard {
    fn start(conn: Arc<Conn>) -> Self {
        conn.on_request();
        Self(conn)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.on_answered();
    }
}

/// The socket, noting when bytes arrive (the start of a request head).
struct TrackedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_bytes();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(10_000, None, 8), 10_000);
        assert_eq!(connection_cap(10_000, Some(1_000_000), 8), 10_000);
        let cap = connection_cap(10_000, Some(1024), 8);
        assert!(cap + (FD_RESERVE + 8) as usize + OVERSHOOT <= 1024, "{cap}");
        assert!(cap >= 512, "{cap}");
        assert_eq!(connection_cap(10_000, Some(100), 8), 1);
    }

    /// After a large block is freed (which raises glibc's threshold unless it is fixed), a block
    /// of a few MiB still comes from `mmap`, so freeing it gives its pages back. Checked in a
    /// fresh process (this test binary run again for this test alone): in the shared test
    /// process, other tests' freed heap chunks could serve the block, as glibc maps a block only
    /// when no free chunk fits.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_blocks_are_mapped_after_a_larger_one_was_freed() {
        const CHILD: &str = "NETSENTINEL_TEST_MMAP_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "server::tests::large_blocks_are_mapped_after_a_larger_one_was_freed",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        return_large_blocks();
        drop(std::hint::black_box(vec![1u8; 24 << 20]));
        let block = std::hint::black_box(vec![1u8; 4 << 20]);
        // SAFETY: glibc keeps each chunk's size word just before the pointer it hands out; its
        // bit 1 (IS_MMAPPED) says the chunk came from mmap.
        let size_word = unsafe { *block.as_ptr().cast::<usize>().sub(1) };
        assert!(size_word & 2 != 0, "a 4 MiB block did not come from mmap");
    }

    #[test]
    fn the_descriptor_limit_can_be_read() {
        #[cfg(unix)]
        assert!(raise_fd_limit().is_some_and(|n| n > 0));
    }
}
