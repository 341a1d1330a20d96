//! Upstream connections: a LIFO pool of keep-alive HTTP/1.1 connections,
//! each driven by the task that is using it.
//!
//! Why not hyper-util's pooled client: it runs every connection in a task of
//! its own, so each proxied request crosses tasks twice (request in, response
//! out) through channels and wake-ups, with a boxed future, a pool lock and a
//! connection-info extension on top. Here the request's own task polls the
//! connection while it waits for the response head, and the response body
//! ([`UpstreamBody`]) keeps polling it while the body streams; the connection
//! goes back to the pool when the body has been read to its end.
//!
//! A connection is only reused when hyper says it is ready for another
//! request; anything else (an upstream that closed it, a response cut short,
//! a request body still being sent) drops it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;

use crate::request::body::{BodyError, RequestBody};
use hyper_util::rt::TokioIo;

use super::connect::{Connector, UpstreamStream};

use crate::sync;

/// Idle connections kept for reuse; more are closed.
const MAX_IDLE: usize = 1024;
/// Idle connections older than this are closed rather than reused (below
/// the keep-alive timeout of common upstream servers such as nginx, 75 s).
/// An upstream that closes sooner (Node: 5 s) is noticed at checkout and
/// costs a retry on a new connection (see [`Pool::send`]); a close that
/// crosses a request already written is a 502, as with any keep-alive client.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: timed out")]
    ConnectTimeout { addr: String },
    /// The TLS handshake failed: most often an untrusted certificate or one
    /// for another name.
    #[error("TLS handshake with {addr} (verifying the name {name}) failed: {source}{hint}")]
    Tls {
        addr: String,
        name: String,
        #[source]
        source: std::io::Error,
        /// What the operator can do about it, when that is clear.
        hint: &'static str,
    },
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// No response head within the upstream timeout (connecting included).
    #[error("no response within the upstream timeout")]
    TimedOut,
}

impl UpstreamError {
    /// Whether forwarding failed because the client's own request body was
    /// malformed or cut short — the client's fault, not the upstream's.
    pub fn is_client_body(&self) -> bool {
        // A user error caused by a body error: the request body (hyper's
        // own `Incoming`) failed to read. Other user errors, such as a
        // connection that went away before answering, stay the upstream's.
        matches!(self, UpstreamError::Http(e) if e.is_user()
            && std::error::Error::source(e).is_some_and(|s| s.is::<BodyError>()))
    }

    /// Whether the client's body arrived below the minimum data rate.
    pub fn is_client_too_slow(&self) -> bool {
        matches!(self, UpstreamError::Http(e) if e.is_user()
            && std::error::Error::source(e)
                .and_then(|s| s.downcast_ref::<BodyError>())
                .is_some_and(|b| matches!(b, BodyError::TooSlow)))
    }
}

/// The state machine that does an upstream connection's I/O.
type Driver = http1::Connection<TokioIo<UpstreamStream>, RequestBody>;

/// One upstream connection: the handle requests are sent on and the state
/// machine that does the I/O. The driver is `None` once it has finished.
struct Conn {
    sender: http1::SendRequest<RequestBody>,
    /// Boxed: the state machine is several hundred bytes, and a `Conn`
    /// moves in and out of the pool and futures on every request.
    driver: Option<Pin<Box<Driver>>>,
    /// When the request in flight must have its response head.
    due: Instant,
    /// The timer for `due`: one per connection rather than one registered
    /// and cancelled per request, and moved lazily. Each request's `due`
    /// is later than the one before, so the timer is left where it is;
    /// when it fires before `due`, it is moved to `due` then. A busy
    /// connection moves its timer once per timeout, not once per request.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Who the driver wakes: the task that polled it last (see
    /// [`DriverWaker`]).
    wakes: Arc<DriverWaker>,
}

/// The waker an upstream connection's driver registers wherever it waits
/// (the socket, the request body, room in the response body's channel):
/// it wakes the task that polled the driver last, once, and then nobody
/// until the driver is polled again. Nothing is lost by that: the driver
/// is polled whenever its task wants something from it (the response
/// head, the next chunk of the body), and then it finds whatever happened
/// meanwhile.
///
/// Why not simply the task's own waker: the response body's channel wakes
/// the driver each time a chunk is taken from it, to say there is room for
/// the next. The driver runs in the task that takes the chunk, so that
/// wake would poll the task once more, for nothing, on every request.
/// [`UpstreamBody::poll_frame`] empties this waker before it takes a chunk.
struct DriverWaker {
    task: atomic_waker::AtomicWaker,
}

impl std::task::Wake for DriverWaker {
    fn wake(self: Arc<Self>) {
        self.task.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.task.wake();
    }
}

/// Why a connection got no response head.
enum SendFailed {
    /// hyper failed; the request comes back if it was not written, so it
    /// can be retried elsewhere (boxed: a rare path, kept out of the size
    /// of every request's future).
    Http(hyper::Error, Option<Box<Request<RequestBody>>>),
    /// The deadline passed first.
    TimedOut,
}

/// What hyper's `try_send_request` returns: the answer to a request handed
/// to a connection.
pub type Answer =
    Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>>;

impl Conn {
    /// Drives the connection once. Returns false once it has finished
    /// (closed by the upstream, or failed).
    fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else {
            return false;
        };
        self.wakes.task.register(cx.waker());
        let waker = Waker::from(self.wakes.clone());
        match driver.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                // Dropping the finished driver fails anything still waiting
                // on it instead of leaving it pending.
                self.driver = None;
                false
            }
        }
    }

    /// Hands `req` to the connection; the answer comes from [`Conn::poll_answer`].
    fn start(
        &mut self,
        req: Box<Request<RequestBody>>,
        deadline: Instant,
    ) -> impl Future<Output = Answer> + Send + use<> {
        self.due = deadline;
        // Only a timer set later than this request's deadline (a shorter
        // timeout than the last request's) must move now.
        if self.deadline.deadline().into_std() > deadline {
            self.deadline.as_mut().reset(deadline.into());
        }
        self.sender.try_send_request(*req)
    }

    /// Drives the connection until `answer` (from [`Conn::start`]) has the
    /// response head, or the deadline passes.
    fn poll_answer(
        &mut self,
        answer: Pin<&mut impl Future<Output = Answer>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<Incoming>, SendFailed>> {
        self.poll_driver(cx);
        // Only the driver, polled just above in this same task, ever
        // answers (or drops the answer when it ends), and it has registered
        // this task's waker for whatever it waits on. Asking the answer
        // with the real waker would have it woken when the driver answers
        // — from inside this poll — and the task polled once more for
        // nothing, on every request.
        match answer.poll(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(resp)) => Poll::Ready(Ok(resp)),
            Poll::Ready(Err(mut e)) => {
                let req = e.take_message().map(Box::new);
                Poll::Ready(Err(SendFailed::Http(e.into_error(), req)))
            }
            Poll::Pending => loop {
                std::task::ready!(self.deadline.as_mut().poll(cx));
                // tokio's clock, as the timer's (they differ only when a
                // test pauses time).
                if tokio::time::Instant::now() >= self.due.into() {
                    // The request may be half written: the connection goes.
                    return Poll::Ready(Err(SendFailed::TimedOut));
                }
                // Set for an earlier request: on to this one's deadline.
                self.deadline.as_mut().reset(self.due.into());
            },
        }
    }
}

/// Connections to one upstream address.
pub struct Pool {
    connector: Connector,
    idle: Mutex<VecDeque<(Conn, Instant)>>,
}

pin_project_lite::pin_project! {
    /// A request on its way upstream, from [`Pool::send`]. On the common
    /// path the request is already written to a pooled connection and
    /// this waits for the answer in place: no future of its own per level,
    /// no allocation. Connecting is the rare path, boxed.
    pub struct Sending<'a, F> {
        pool: &'a Arc<Pool>,
        // The pooled connection the request went out on.
        conn: Option<Conn>,
        #[pin]
        answer: Option<F>,
        // A new connection: none was ready, or the pooled one turned out
        // dead before the request was written.
        connecting: Option<Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a>>>,
        deadline: Instant,
    }
}

impl<F: Future<Output = Answer>> Future for Sending<'_, F> {
    type Output = Result<Response<UpstreamBody>, UpstreamError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let (Some(conn), Some(answer)) = (this.conn.as_mut(), this.answer.as_mut().as_pin_mut())
        {
            let failed = match std::task::ready!(conn.poll_answer(answer, cx)) {
                Ok(resp) => {
                    let conn = this.conn.take().expect("checked above");
                    return Poll::Ready(Ok(this.pool.stream(resp, conn)));
                }
                Err(failed) => failed,
            };
            this.answer.set(None);
            *this.conn = None;
            match failed {
                SendFailed::Http(e, Some(unsent)) => {
                    tracing::debug!(error = %e, "pooled upstream connection unusable; reconnecting");
                    *this.connecting =
                        Some(Box::pin(this.pool.connect_and_send(unsent, *this.deadline)));
                }
                SendFailed::Http(e, None) => return Poll::Ready(Err(e.into())),
                SendFailed::TimedOut => return Poll::Ready(Err(UpstreamError::TimedOut)),
            }
        }
        match this.connecting.as_mut() {
            Some(connecting) => connecting.as_mut().poll(cx),
            // Polled again after it answered: a caller's bug, and no
            // answer is left to give.
            None => Poll::Ready(Err(UpstreamError::TimedOut)),
        }
    }
}

impl Pool {
    pub fn new(connector: Connector) -> Arc<Pool> {
        Arc::new(Pool {
            connector,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// Sends `req` on a pooled connection, or a new one, and returns the
    /// response with its body still streaming. A pooled connection the
    /// upstream closed in the meantime costs a retry on a new connection,
    /// but only while the request has not been written. The response head
    /// must arrive within `timeout` of `now`, connecting and any retry
    /// included ([`UpstreamError::TimedOut`] otherwise). `now` is the
    /// caller's (when the request arrived, a moment ago): one clock read
    /// fewer per request.
    ///
    /// A pooled connection gets the request at once, before this returns.
    pub fn send(
        self: &Arc<Pool>,
        req: Box<Request<RequestBody>>,
        now: Instant,
        timeout: Duration,
    ) -> Sending<'_, impl Future<Output = Answer> + Send + use<>> {
        let deadline = now + timeout;
        let (conn, answer, connecting) = match self.checkout(now) {
            Some(mut conn) => {
                let answer = conn.start(req, deadline);
                (Some(conn), Some(answer), None)
            }
            None => {
                let connecting: Pin<Box<dyn Future<Output = _> + Send + '_>> =
                    Box::pin(self.connect_and_send(req, deadline));
                (None, None, Some(connecting))
            }
        };
        Sending {
            pool: self,
            conn,
            answer,
            connecting,
            deadline,
        }
    }

    /// A new connection, and `req` sent on it.
    async fn connect_and_send(
        self: &Arc<Pool>,
        req: Box<Request<RequestBody>>,
        deadline: Instant,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let connecting = tokio::time::timeout_at(deadline.into(), self.connect());
        let mut conn = connecting.await.map_err(|_| UpstreamError::TimedOut)??;
        let mut answer = std::pin::pin!(conn.start(req, deadline));
        match std::future::poll_fn(|cx| conn.poll_answer(answer.as_mut(), cx)).await {
            Ok(resp) => Ok(self.stream(resp, conn)),
            Err(SendFailed::Http(e, _)) => Err(e.into()),
            Err(SendFailed::TimedOut) => Err(UpstreamError::TimedOut),
        }
    }

    fn stream(self: &Arc<Pool>, resp: Response<Incoming>, conn: Conn) -> Response<UpstreamBody> {
        resp.map(|inner| UpstreamBody {
            inner,
            conn: Some(conn),
            pool: self.clone(),
        })
    }

    /// The most recently used idle connection that is still open and ready.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = sync::lock(&self.idle);
        while let Some((mut conn, since)) = idle.pop_back() {
            if now.saturating_duration_since(since) > IDLE_TIMEOUT {
                // Everything below is older still.
                idle.clear();
                return None;
            }
            // One poll notices a close the upstream sent while it sat idle.
            let alive = conn.poll_driver(&mut Context::from_waker(std::task::Waker::noop()));
            if alive && conn.sender.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = sync::lock(&self.idle);
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) > IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back((conn, now));
    }

    /// Closes idle connections past their time (called from upkeep, so a
    /// quiet proxy does not hold them forever).
    pub fn close_stale(&self) {
        let mut idle = sync::lock(&self.idle);
        idle.retain(|(_, since)| since.elapsed() <= IDLE_TIMEOUT);
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let stream = self.connector.connect().await?;
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver)),
            // Moved to the first request's deadline when it is polled.
            due: Instant::now(),
            deadline: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            wakes: Arc::new(DriverWaker {
                task: atomic_waker::AtomicWaker::new(),
            }),
        })
    }

    /// A new connection of its own (never pooled) whose driver runs in a
    /// task and hands the connection over after a `101 Switching
    /// Protocols` (see `hyper::upgrade::on`).
    pub async fn connect_for_upgrade(
        &self,
    ) -> Result<http1::SendRequest<http_body_util::Empty<Bytes>>, UpstreamError> {
        let stream = self.connector.connect().await?;
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = driver.with_upgrades().await {
                tracing::debug!(error = %e, "upstream upgrade connection ended");
            }
        });
        Ok(sender)
    }
}

/// A response body from the upstream. Polling it also drives the
/// connection it arrives on; once read to its end, the connection goes back
/// to the pool. Dropped early (client gone), the connection is closed.
pub struct UpstreamBody {
    inner: Incoming,
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            && conn.driver.is_some()
        {
            self.pool.checkin(conn);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match this.conn.as_mut() {
            Some(conn) => {
                conn.poll_driver(cx);
                // Taking a chunk wakes the driver; with nobody to wake (see
                // `DriverWaker`), it is polled when the next one is wanted.
                drop(conn.wakes.task.take());
                let polled = Pin::new(&mut this.inner).poll_frame(cx);
                if polled.is_pending() {
                    // Nothing to take: the driver waits for the upstream
                    // again, on this task's waker (and finds anything that
                    // happened while its waker was empty).
                    conn.poll_driver(cx);
                }
                polled
            }
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper may not poll a body it knows is complete (an empty body,
        // or the last byte of a Content-Length body already read).
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pool against a scripted upstream over in-memory pipes: which
    //! connection each request travels on, when a connection is kept or
    //! dropped, and whose fault each failure is.

    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;

    use super::*;

    /// What the upstream does with the n-th request on a connection.
    #[derive(Clone, Copy)]
    enum Reply {
        /// A complete response with a 5-byte body; the connection stays open.
        Ok,
        /// A complete response, then the upstream closes the connection
        /// (without announcing it: no `Connection: close`).
        OkThenClose,
        /// Announces 100 bytes, sends 5, closes.
        CutShort,
        /// A 1 MiB body, so a reader that stops early leaves most unread.
        Large,
        /// Never answers; waits for the request body (which never comes).
        Silent,
    }

    /// A scripted upstream: counts connections and requests, answers the
    /// n-th request it receives (1-based, over all connections) as
    /// `script(n)` says.
    struct Upstream {
        connections: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    }

    fn upstream(script: fn(usize) -> Reply) -> (Arc<Pool>, Upstream) {
        let (tx, mut rx) = mpsc::unbounded_channel::<DuplexStream>();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Some(io) = rx.recv().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_script(io, script, r.clone()));
            }
        });
        let pool = Pool::new(Connector::in_memory(tx));
        (
            pool,
            Upstream {
                connections,
                requests,
            },
        )
    }

    async fn serve_script(
        mut io: DuplexStream,
        script: fn(usize) -> Reply,
        requests: Arc<AtomicUsize>,
    ) {
        let mut buf = Vec::new();
        loop {
            // Read one request head (the tests send no request bodies
            // upstream except where the client's body fails first).
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                match io.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            buf.drain(..end);
            let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
            match script(n) {
                Reply::Ok => {
                    let _ = io.write_all(ok).await;
                }
                Reply::OkThenClose => {
                    let _ = io.write_all(ok).await;
                    return;
                }
                Reply::CutShort => {
                    let _ = io
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                        .await;
                    return;
                }
                Reply::Silent => {
                    let mut sink = [0u8; 4096];
                    while matches!(io.read(&mut sink).await, Ok(k) if k > 0) {}
                    return;
                }
                Reply::Large => {
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n";
                    if io.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    for _ in 0..16 {
                        if io.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// A request as the pipeline hands it to the proxy: its body is the
    /// client's (`Incoming` from a real hyper server over a pipe). `raw` is
    /// what the client sends; `hang_up` closes the client's side after it.
    async fn client_request(raw: &'static [u8], hang_up: bool) -> Box<Request<RequestBody>> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let _ = tx.send(req.map(|b| RequestBody::new(b, None, None)));
                // Never answers: the test owns the request from here on.
                std::future::pending::<Result<Response<http_body_util::Empty<Bytes>>, Infallible>>()
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service)
                .await;
        });
        client.write_all(raw).await.unwrap();
        if hang_up {
            drop(client);
        } else {
            // Kept open for the rest of the test.
            tokio::spawn(async move {
                let _client = client;
                std::future::pending::<()>().await
            });
        }
        Box::new(rx.recv().await.expect("the server parsed the request"))
    }

    async fn get() -> Box<Request<RequestBody>> {
        client_request(b"GET /api/v2/x HTTP/1.1\r\nhost: a\r\n\r\n", false).await
    }

    /// The upstream timeout the tests send with; only the timeout tests wait
    /// for it to pass.
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn idle_count(pool: &Pool) -> usize {
        sync::lock(&pool.idle).len()
    }

    async fn read_all(resp: Response<UpstreamBody>) -> Result<Bytes, hyper::Error> {
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (pool, up) = upstream(|_| Reply::Ok);
        for _ in 0..3 {
            let resp = pool
                .send(get().await, Instant::now(), TIMEOUT)
                .await
                .unwrap();
            assert_eq!(read_all(resp).await.unwrap(), "hello");
            assert_eq!(idle_count(&pool), 1, "read to its end, it goes back");
        }
        assert_eq!(up.requests.load(Ordering::SeqCst), 3);
        assert_eq!(
            up.connections.load(Ordering::SeqCst),
            1,
            "one connection served all three"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_past_its_time_is_not_reused() {
        let (pool, up) = upstream(|_| Reply::Ok);
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        read_all(resp).await.unwrap();
        // Age the pooled connection past the idle timeout.
        {
            let mut idle = sync::lock(&pool.idle);
            let (_, since) = idle.back_mut().unwrap();
            *since -= IDLE_TIMEOUT + Duration::from_secs(1);
        }
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(read_all(resp).await.unwrap(), "hello");
        assert_eq!(
            up.connections.load(Ordering::SeqCst),
            2,
            "a new connection was opened"
        );
        // And upkeep's sweep drops an aged one without a request.
        {
            let mut idle = sync::lock(&pool.idle);
            let (_, since) = idle.back_mut().unwrap();
            *since -= IDLE_TIMEOUT + Duration::from_secs(1);
        }
        assert_eq!(idle_count(&pool), 1);
        pool.close_stale();
        assert_eq!(idle_count(&pool), 0);
    }

    #[tokio::test]
    async fn a_close_while_idle_is_noticed_at_checkout_and_costs_a_new_connection() {
        let (pool, up) = upstream(|_| Reply::OkThenClose);
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(read_all(resp).await.unwrap(), "hello");
        // Let the upstream's close reach our end of the pipe.
        while up.requests.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        // The next request must not fail: the closed connection is skipped.
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(read_all(resp).await.unwrap(), "hello");
        assert_eq!(up.connections.load(Ordering::SeqCst), 2);
        assert_eq!(
            up.requests.load(Ordering::SeqCst),
            2,
            "each request reached the upstream once"
        );
    }

    #[tokio::test]
    async fn a_response_cut_short_fails_the_body_and_drops_the_connection() {
        let (pool, up) = upstream(|_| Reply::CutShort);
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "the head arrived");
        let err = read_all(resp).await.expect_err("the body ends early");
        assert!(err.to_string().contains("body"), "{err}");
        assert_eq!(idle_count(&pool), 0, "a broken connection is not pooled");
        // The next request gets a connection of its own.
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        assert!(read_all(resp).await.is_err());
        assert_eq!(up.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_early_closes_its_connection() {
        let (pool, up) = upstream(|n| if n == 1 { Reply::Large } else { Reply::Ok });
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
        drop(body); // the client went away mid-body
        assert_eq!(
            idle_count(&pool),
            0,
            "half-read, the connection cannot be reused"
        );
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        assert!(read_all(resp).await.unwrap() == "hello");
        assert_eq!(up.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_the_upstreams_fault() {
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx); // nobody listens: connections are refused
        let pool = Pool::new(Connector::in_memory(tx));
        let Err(err) = pool.send(get().await, Instant::now(), TIMEOUT).await else {
            panic!("a refused connection must fail the request");
        };
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
        assert!(!err.is_client_body() && !err.is_client_too_slow());
    }

    #[tokio::test]
    async fn a_client_body_cut_short_is_the_clients_fault() {
        let (pool, up) = upstream(|n| if n == 1 { Reply::Silent } else { Reply::Ok });
        // The client announces 100 bytes, sends 5 and hangs up.
        let req = client_request(
            b"POST /api/v2/x HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nhello",
            true,
        )
        .await;
        let Err(err) = pool.send(req, Instant::now(), TIMEOUT).await else {
            panic!("a body cut short must fail the request");
        };
        assert!(err.is_client_body(), "blamed on the client: {err:?}");
        assert!(!err.is_client_too_slow());
        assert_eq!(idle_count(&pool), 0);
        // The valid form goes through on the same pool.
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(read_all(resp).await.unwrap(), "hello");
        assert_eq!(up.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_head_before_the_deadline_is_a_timeout_and_drops_the_connection() {
        let (pool, up) = upstream(|n| if n == 1 { Reply::Silent } else { Reply::Ok });
        let Err(err) = pool
            .send(get().await, Instant::now(), Duration::from_millis(100))
            .await
        else {
            panic!("a silent upstream must time out");
        };
        assert!(matches!(err, UpstreamError::TimedOut), "{err:?}");
        assert_eq!(idle_count(&pool), 0, "a timed-out connection is not pooled");
        // The valid form: the next request gets a new connection and its answer.
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(read_all(resp).await.unwrap(), "hello");
        assert_eq!(up.connections.load(Ordering::SeqCst), 2);
    }

    /// The waker a request's task polls with, counting its wakes and
    /// those that come while the task is being polled: a task that wakes
    /// itself from inside its own poll is polled once more, for nothing.
    struct WakeCounter {
        task: Waker,
        polling: std::sync::atomic::AtomicBool,
        wakes: AtomicUsize,
        self_wakes: AtomicUsize,
    }

    impl std::task::Wake for WakeCounter {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            if self.polling.load(Ordering::SeqCst) {
                self.self_wakes.fetch_add(1, Ordering::SeqCst);
            }
            self.task.wake_by_ref();
        }
    }

    /// Runs `work` to its end on a [`WakeCounter`]; returns its output,
    /// then all wakes and self-wakes.
    async fn counting_wakes<T>(work: impl Future<Output = T>) -> (T, usize, usize) {
        let mut work = std::pin::pin!(work);
        let mut counter: Option<Arc<WakeCounter>> = None;
        let out = std::future::poll_fn(|cx| {
            let counter = counter.get_or_insert_with(|| {
                Arc::new(WakeCounter {
                    task: cx.waker().clone(),
                    polling: false.into(),
                    wakes: AtomicUsize::new(0),
                    self_wakes: AtomicUsize::new(0),
                })
            });
            let waker = Waker::from(counter.clone());
            counter.polling.store(true, Ordering::SeqCst);
            let polled = work.as_mut().poll(&mut Context::from_waker(&waker));
            counter.polling.store(false, Ordering::SeqCst);
            polled
        })
        .await;
        let counter = counter.expect("polled at least once");
        let wakes = counter.wakes.load(Ordering::SeqCst);
        (out, wakes, counter.self_wakes.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_request_on_a_pooled_connection_never_wakes_its_own_task() {
        let (pool, _up) = upstream(|_| Reply::Ok);
        // The first request opens the connection; the second is the
        // common case, a pooled connection.
        let resp = pool
            .send(get().await, Instant::now(), TIMEOUT)
            .await
            .unwrap();
        read_all(resp).await.unwrap();
        let req = get().await;
        let (body, wakes, self_wakes) = counting_wakes(async {
            let resp = pool.send(req, Instant::now(), TIMEOUT).await.unwrap();
            read_all(resp).await.unwrap()
        })
        .await;
        assert_eq!(body, "hello");
        // The upstream's answer wakes the task, from outside its poll...
        assert!(
            wakes >= 1,
            "the task waited for the upstream: {wakes} wakes"
        );
        // ...and nothing the task does itself (the driver answering the
        // request, a chunk taken from the body) wakes it again.
        assert_eq!(self_wakes, 0, "of {wakes} wakes");
        assert_eq!(idle_count(&pool), 1, "and the connection went back");
    }

    #[tokio::test]
    async fn each_request_on_a_reused_connection_times_out_at_its_own_deadline() {
        // Request 2 gets no answer: with a timeout shorter than request 1's
        // (the timer must move earlier), then request 4 with a longer one
        // after request 3's short one (the timer fires first and moves on).
        let (pool, up) = upstream(|n| {
            if n == 2 || n == 4 {
                Reply::Silent
            } else {
                Reply::Ok
            }
        });
        let resp = pool
            .send(get().await, Instant::now(), Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(read_all(resp).await.unwrap(), "hello");
        let short = pool.send(get().await, Instant::now(), Duration::from_millis(100));
        let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(10), short).await else {
            panic!("the silent upstream must time out at the request's own deadline");
        };
        assert!(matches!(err, UpstreamError::TimedOut), "{err:?}");
        let resp = pool
            .send(get().await, Instant::now(), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(read_all(resp).await.unwrap(), "hello");
        let started = Instant::now();
        let Err(err) = pool
            .send(get().await, Instant::now(), Duration::from_millis(400))
            .await
        else {
            panic!("a silent upstream must time out");
        };
        assert!(matches!(err, UpstreamError::TimedOut), "{err:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "not before its own deadline, though the timer was set for an earlier one"
        );
        assert_eq!(up.requests.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_deadline_that_passed_while_the_connection_idled_does_not_fail_the_next_request() {
        let (pool, up) = upstream(|_| Reply::Ok);
        let short = Duration::from_millis(50);
        let resp = pool.send(get().await, Instant::now(), short).await.unwrap();
        assert_eq!(read_all(resp).await.unwrap(), "hello");
        // The first request's deadline passes (and its timer fires) while
        // the connection sits in the pool.
        tokio::time::sleep(short * 4).await;
        for _ in 0..2 {
            let resp = pool
                .send(get().await, Instant::now(), TIMEOUT)
                .await
                .unwrap();
            assert_eq!(read_all(resp).await.unwrap(), "hello");
        }
        assert_eq!(
            up.connections.load(Ordering::SeqCst),
            1,
            "the same connection served all three"
        );
    }
}
