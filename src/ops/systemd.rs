//! systemd integration (`Type=notify`): READY=1 once the store is open and
//! the listeners are bound, watchdog pings at half `WatchdogSec`, STOPPING=1
//! when the drain begins. Outside systemd (`NOTIFY_SOCKET` unset) every call
//! is a no-op.

use sd_notify::NotifyState;

/// Tells systemd the service is up.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells systemd the service is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Tells systemd a reload (SIGHUP) started or finished.
pub fn reloading(done: bool) {
    if done {
        notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    } else {
        notify(&[NotifyState::Reloading]);
    }
}

/// The watchdog pinger, if systemd asked for one (the caller spawns it with
/// the other background tasks). The ping runs on the
/// runtime, so a wedged reactor stops it and systemd restarts the service.
pub fn watchdog() -> Option<impl Future<Output = ()> + Send + 'static> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    tracing::info!(
        every_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    })
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}
