//! Cross-instance session invalidation on PostgreSQL: one dedicated
//! connection `LISTEN`s on the revocation channel and hands every ended
//! session to the sink (the session cache), usually within milliseconds.
//!
//! Notifications sent while the connection is down are lost, so after every
//! (re)connect the listener reads `gh_revocations` past the last sequence
//! number it saw; if that sequence was already pruned, it asks the sink to
//! drop everything. While it is disconnected, [`RevocationFeed::healthy`] is
//! false, so the cache can bound how long it trusts its entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::pg_conn::Connector;
use super::pg_schema::REVOCATION_CHANNEL;
use super::{StoreError, TokenHash};

/// What the listener reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// This session ended (on any instance).
    Session(TokenHash),
    /// Revocations may have been missed: drop every cached session.
    All,
}

/// Receives revocations; called from the listener task.
pub type RevocationSink = Arc<dyn Fn(Revoked) + Send + Sync>;

/// Pause between reconnect attempts.
const RECONNECT: Duration = Duration::from_secs(1);

/// Whether the listener is connected and caught up.
#[derive(Default)]
pub struct RevocationFeed {
    healthy: AtomicBool,
}

impl RevocationFeed {
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

/// Opens one connection outside the pool, its driver task spawned on the
/// current runtime.
pub(super) async fn connect(
    config: &tokio_postgres::Config,
    connector: &Connector,
) -> Result<tokio_postgres::Client, StoreError> {
    match connector {
        Connector::Plain => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok(client)
        }
        Connector::Tls(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            tokio::spawn(connection);
            Ok(client)
        }
    }
}

/// Spawns the listener on `runtime`; it runs until the runtime stops.
pub(super) fn spawn(
    runtime: &tokio::runtime::Handle,
    config: tokio_postgres::Config,
    connector: Connector,
    sink: RevocationSink,
    feed: Arc<RevocationFeed>,
) {
    runtime.spawn(async move {
        let mut last_seq: Option<i64> = None;
        loop {
            let outcome = listen_once(&config, &connector, &sink, &feed, &mut last_seq).await;
            feed.healthy.store(false, Ordering::Release);
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "revocation listener disconnected; reconnecting");
            }
            tokio::time::sleep(RECONNECT).await;
        }
    });
}

/// One connection's life: LISTEN, catch up, then forward notifications
/// until the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    connector: &Connector,
    sink: &RevocationSink,
    feed: &RevocationFeed,
    last_seq: &mut Option<i64>,
) -> Result<(), StoreError> {
    let (client, mut messages) = match connector {
        Connector::Plain => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            (client, forward(connection))
        }
        Connector::Tls(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, forward(connection))
        }
    };
    client
        .batch_execute(&format!("LISTEN {REVOCATION_CHANNEL}"))
        .await?;
    // Catch up on what happened while no one listened.
    match *last_seq {
        None => {
            let max: Option<i64> = client
                .query_one("SELECT max(seq) FROM gh_revocations", &[])
                .await?
                .get(0);
            *last_seq = Some(max.unwrap_or(0));
        }
        Some(seen) => {
            let min: Option<i64> = client
                .query_one("SELECT min(seq) FROM gh_revocations", &[])
                .await?
                .get(0);
            if min.is_some_and(|m| m > seen + 1) {
                // Some were pruned before we could read them.
                sink(Revoked::All);
            }
            let rows = client
                .query(
                    "SELECT seq, token FROM gh_revocations WHERE seq > $1 ORDER BY seq",
                    &[&seen],
                )
                .await?;
            for row in &rows {
                if let Ok(hash) = TokenHash::try_from(row.get::<_, &[u8]>(1)) {
                    sink(Revoked::Session(hash));
                }
                *last_seq = Some(row.get(0));
            }
        }
    }
    feed.healthy.store(true, Ordering::Release);
    while let Some(payload) = messages.recv().await {
        if let Some((seq, hash)) = parse(&payload) {
            sink(Revoked::Session(hash));
            *last_seq = Some(last_seq.map_or(seq, |s| s.max(seq)));
        }
    }
    drop(client);
    Ok(())
}

/// Drives the connection, passing notification payloads on; the channel
/// closes when the connection ends.
fn forward<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
) -> tokio::sync::mpsc::UnboundedReceiver<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    rx
}

/// `"<seq>:<hex token hash>"`.
fn parse(payload: &str) -> Option<(i64, TokenHash)> {
    let (seq, hex) = payload.split_once(':')?;
    let seq = seq.parse().ok()?;
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (k, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * k..2 * k + 2)?, 16).ok()?;
    }
    Some((seq, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_and_garbage_is_ignored() {
        let hex = "ab".repeat(32);
        assert_eq!(parse(&format!("7:{hex}")), Some((7, [0xab; 32])));
        assert_eq!(parse("7:abc"), None);
        assert_eq!(parse(&format!("x:{hex}")), None);
        assert_eq!(parse(&format!("7:{}", "zz".repeat(32))), None);
    }
}
