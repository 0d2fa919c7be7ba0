//! LISTEN/NOTIFY: the listening connection every replica keeps, what its notifications evict
//! from the cache, and the payload format.
//!
//! The listening connection is the replica's view of the database: it reconnects with backoff
//! and drops the whole cache on every reconnect. Must never write to the database.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use super::{Eviction, PgError, PgSource, CHANNEL};
use crate::token::Digest;

/// Payload that asks every replica to drop its whole cache.
const FLUSH_ALL: &str = "*";

/// Digests per NOTIFY payload (65 bytes each; PostgreSQL caps a payload below 8,000 bytes).
const DIGESTS_PER_NOTIFY: usize = 100;

/// How often the listening connection proves it is alive when no notification comes.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl PgSource {
    /// Applies an eviction to this replica's cache.
    pub(super) fn evict(&self, eviction: &Eviction) {
        match eviction {
            Eviction::All => self.flush_cache(),
            Eviction::Tokens(digests) => {
                if let Some(evict) = self.evictor.get() {
                    evict(eviction);
                }
                self.metrics
                    .revocations_received
                    .inc_by(digests.len() as u64);
            }
        }
    }

    fn flush_cache(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(evict) = self.evictor.get() {
            evict(&Eviction::All);
        }
        self.metrics.cache_flushes.inc();
    }

    /// Opens the listening connection and subscribes. The server does this before it serves,
    /// so no token is ever cached by a replica that could miss its revocation.
    pub async fn subscribe(&self) -> Result<Session, PgError> {
        let mut settings = self.config.settings.clone();
        settings.connect_timeout(self.config.timeout);
        // The same TLS as the pool; the files are read again on every reconnect, so a rotated
        // CA or client certificate is picked up without a restart.
        let tls = super::tls::MakeRustls::new(&self.config.tls)
            .map_err(|e| PgError::Database(format!("tokens.postgres.url TLS settings: {e}")))?;
        let (client, mut connection) =
            match tokio::time::timeout(self.config.timeout, settings.connect(tls)).await {
                Ok(connected) => connected?,
                Err(_) => return Err(PgError::Timeout(self.config.timeout)),
            };
        let (tx, notes) = tokio::sync::mpsc::unbounded_channel::<String>();
        // The connection delivers notifications only while it is polled.
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return String::from("listener stopped");
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return PgError::from(e).to_string(),
                    None => return String::from("connection closed"),
                }
            }
        });
        let listen = format!("LISTEN {CHANNEL}");
        match tokio::time::timeout(self.config.timeout, client.batch_execute(&listen)).await {
            Ok(Ok(())) => Ok(Session {
                client,
                notes,
                driver,
            }),
            Ok(Err(e)) => {
                driver.abort();
                Err(e.into())
            }
            Err(_) => {
                driver.abort();
                Err(PgError::Timeout(self.config.timeout))
            }
        }
    }

    /// Keeps a listening connection until `shutdown`, starting with `first` (from
    /// [`PgSource::subscribe`]): applies notifications, reconnects with backoff when the
    /// connection is lost, and drops the whole cache on every reconnect, since notifications
    /// sent meanwhile were lost.
    pub async fn listen(
        self: Arc<Self>,
        first: Option<Session>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = BACKOFF_MIN;
        let mut next = first;
        loop {
            let session = match next.take() {
                Some(s) => s,
                None => {
                    let subscribed = tokio::select! {
                        s = self.subscribe() => s,
                        _ = shutdown.changed() => return,
                    };
                    match subscribed {
                        Ok(s) => {
                            self.evict(&Eviction::All);
                            self.set_reachable(true, None);
                            backoff = BACKOFF_MIN;
                            s
                        }
                        Err(e) => {
                            self.set_reachable(false, Some(e.to_string()));
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = shutdown.changed() => return,
                            }
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            continue;
                        }
                    }
                }
            };
            let error = tokio::select! {
                e = self.run(session) => e,
                _ = shutdown.changed() => return,
            };
            self.set_reachable(false, Some(error));
        }
    }

    /// Applies a session's notifications and proves it alive; returns why it ended.
    async fn run(&self, mut session: Session) -> String {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let error = loop {
            tokio::select! {
                note = session.notes.recv() => match note {
                    Some(payload) => self.evict(&parse_payload(&payload)),
                    None => break String::from("connection closed"),
                },
                _ = heartbeat.tick() => {
                    let alive = tokio::time::timeout(
                        self.config.timeout,
                        session.client.simple_query("SELECT 1"),
                    )
                    .await;
                    match alive {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break PgError::from(e).to_string(),
                        Err(_) => break PgError::Timeout(self.config.timeout).to_string(),
                    }
                }
            }
        };
        session.driver.abort();
        error
    }
}

/// A listening connection: the client (for heartbeats), its notifications, and the task that
/// drives it.
pub struct Session {
    client: tokio_postgres::Client,
    notes: tokio::sync::mpsc::UnboundedReceiver<String>,
    driver: tokio::task::JoinHandle<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The NOTIFY payloads for an eviction: comma-separated hex digests, or `*`.
pub fn payloads(eviction: &Eviction) -> Vec<String> {
    match eviction {
        Eviction::All => vec![FLUSH_ALL.to_owned()],
        Eviction::Tokens(digests) => digests
            .chunks(DIGESTS_PER_NOTIFY)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|d| hex::encode(d.0))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect(),
    }
}

/// Reads a NOTIFY payload. Anything unreadable asks for a whole flush: dropping too much costs
/// lookups, keeping a revoked token costs safety.
pub fn parse_payload(payload: &str) -> Eviction {
    if payload == FLUSH_ALL {
        return Eviction::All;
    }
    let mut digests = Vec::new();
    for part in payload.split(',') {
        match Digest::parse(part) {
            Some(d) => digests.push(d),
            None => return Eviction::All,
        }
    }
    Eviction::Tokens(digests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_stay_under_the_notify_limit() {
        let digests: Vec<Digest> = (0..250u32)
            .map(|i| Digest::of(format!("token-{i}").as_bytes()))
            .collect();
        let payloads = payloads(&Eviction::Tokens(digests.clone()));
        assert_eq!(payloads.len(), 3);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000, "{} bytes", p.len());
            match parse_payload(p) {
                Eviction::Tokens(d) => back.extend(d),
                Eviction::All => panic!("a well-formed payload read as a flush"),
            }
        }
        assert_eq!(back, digests);
        assert_eq!(parse_payload("*"), Eviction::All);
        assert_eq!(parse_payload("not-a-digest"), Eviction::All);
    }
}
