//! Background work on a period until shutdown: the one loop the file, certificate and probe
//! watchers share.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Runs `tick` now and then every `period` (a slow tick delays the next rather than bunching
/// them) until `shutdown` changes or its sender goes away.
pub async fn every<F, Fut>(period: Duration, shutdown: watch::Receiver<bool>, tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    run(tokio::time::interval(period), shutdown, tick).await
}

/// As [`every`], but the first tick comes after one period: for work that has nothing to do
/// at start (flushing what requests recorded).
pub async fn after_every<F, Fut>(period: Duration, shutdown: watch::Receiver<bool>, tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let first = tokio::time::Instant::now() + period;
    run(tokio::time::interval_at(first, period), shutdown, tick).await
}

async fn run<F, Fut>(
    mut interval: tokio::time::Interval,
    mut shutdown: watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        tick().await;
    }
}
