//! Shutdown signalling: one trigger, many listeners (the mini-redis pattern).
//!
//! The scheduler stops taking new work when the signal fires; a wave that is under way is
//! allowed to finish within the grace period, because interrupting it between intent and
//! outcome would only create in-doubt tasks that the next start has to reconcile.

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    /// A listener that never fires (one-shot commands).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive for the life of the process so `wait` pends forever.
        std::mem::forget(tx);
        Shutdown { rx }
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when the trigger fires (or its owner is gone).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_the_trigger() {
        let (trigger, a) = channel();
        let mut b = a.clone();
        assert!(!a.is_triggered());
        trigger.trigger();
        b.wait().await;
        assert!(a.is_triggered() && b.is_triggered());
    }
}
