//! Long-running tasks: the accept loop every listener shares (the public
//! listener, the admin socket, the health listener, the ACME plain-HTTP
//! listener) and the group of background tasks that stop together when the
//! server's cancellation token is cancelled. A leaf: it knows sockets,
//! tokio and tracing, not what the connections are for.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long to pause after a failed `accept` (usually EMFILE: out of file
/// descriptors) instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket: TCP or Unix.
pub trait Listener {
    type Io: Send + 'static;
    type Addr: Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Self::Addr)>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Self::Addr)>> + Send {
        tokio::net::TcpListener::accept(self)
    }
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Self::Addr)>> + Send {
        tokio::net::UnixListener::accept(self)
    }
}

/// Accepts connections for ever (stop it by dropping the future, e.g. with
/// [`CancellationToken::run_until_cancelled`]). Each accepted connection
/// first asks `admit` for a permit — a connection slot, a semaphore permit —
/// which may wait (the loop accepts nothing meanwhile, so at most one
/// connection waits beyond the cap) or refuse (`None`: the connection is
/// dropped). `serve` then starts the connection (it spawns) with its permit
/// and the instant it was accepted, from which deadlines count. A failed
/// accept is logged as `what` and retried after a short pause.
pub async fn accept_loop<L: Listener, P, A: Future<Output = Option<P>>>(
    listener: &L,
    what: &'static str,
    mut admit: impl FnMut(&L::Addr) -> A,
    mut serve: impl FnMut(L::Io, L::Addr, P, Instant),
) {
    loop {
        let (io, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let accepted = Instant::now();
        if let Some(permit) = admit(&addr).await {
            serve(io, addr, permit, accepted);
        }
    }
}

/// A semaphore permit for [`accept_loop`]'s `admit` on listeners capped at
/// a fixed number of connections.
pub async fn permit(
    permits: std::sync::Arc<tokio::sync::Semaphore>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    permits.acquire_owned().await.ok()
}

/// Background tasks that stop together: each runs until its token is
/// cancelled. Groups made with [`Background::child`] stop with their parent
/// or on their own, so the server can stop upkeep before the drain and the
/// admin listeners after it, all under one root token.
pub struct Background {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    pub fn new(token: CancellationToken) -> Background {
        Background {
            token,
            tasks: Vec::new(),
        }
    }

    /// A group cancelled with this one's token, or by itself.
    pub fn child(&self) -> Background {
        Background::new(self.token.child_token())
    }

    /// Spawns `task`; it is dropped at its next await once the group stops.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let token = self.token.clone();
        self.tasks.push(tokio::spawn(async move {
            token.run_until_cancelled_owned(task).await;
        }));
    }

    /// Cancels the group and waits until every task has ended (they end at
    /// their next await point; their destructors have run on return).
    pub async fn stop(self) {
        self.token.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
