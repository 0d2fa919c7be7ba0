//! Background work on a period until shutdown: the one loop the file, certificate and probe
//! watchers share.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Runs `tick` now and then every `period` (a slow tick delays the next rather than bunching
/// them) until `shutdown` changes or its sender goes away.
pub async fn every<F, Fut>(period: Duration, mut shutdown: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        tick().await;
    }
}
