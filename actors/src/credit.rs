//! Inbound credit: bytes of application messages delivered by a session and not yet consumed by
//! the application. Each [`crate::Inbound`] carries a [`Credit`] for its size; dropping the
//! message returns it. When a session's outstanding credit exceeds its budget, the session stops
//! reading (the actor waits) until the application has consumed half of it, so a fast peer and
//! a slow application cost a bounded amount of memory and TCP pushes back on the peer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// One session's outstanding inbound bytes.
#[derive(Debug)]
pub(crate) struct InboundCredit {
    bytes: AtomicUsize,
    notify: Notify,
    budget: usize,
}

/// Bytes of one delivered message; returned to the session's budget on drop.
#[derive(Debug)]
pub struct Credit {
    counter: Arc<InboundCredit>,
    n: usize,
}

impl InboundCredit {
    pub(crate) fn new(budget: usize) -> Arc<Self> {
        Arc::new(Self {
            bytes: AtomicUsize::new(0),
            notify: Notify::new(),
            budget,
        })
    }

    /// Takes `n` bytes of credit for a message about to be delivered.
    pub(crate) fn take(self: &Arc<Self>, n: usize) -> Credit {
        self.bytes.fetch_add(n, Ordering::AcqRel);
        Credit {
            counter: self.clone(),
            n,
        }
    }

    /// Whether the outstanding bytes exceed the budget.
    pub(crate) fn is_over(&self) -> bool {
        self.bytes.load(Ordering::Acquire) > self.budget
    }

    fn low_water(&self) -> usize {
        self.budget / 2
    }

    /// Resolves once the outstanding bytes are at or below half the budget.
    pub(crate) async fn drained(self: Arc<Self>) {
        loop {
            let notified = self.notify.notified();
            if self.bytes.load(Ordering::Acquire) <= self.low_water() {
                return;
            }
            notified.await;
        }
    }

    /// Bytes delivered and not yet consumed.
    pub(crate) fn outstanding(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        let before = self.counter.bytes.fetch_sub(self.n, Ordering::AcqRel);
        let low = self.counter.low_water();
        if before > low && before - self.n <= low {
            // notify_one keeps a permit if the session is not waiting yet: no lost wake-up.
            self.counter.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_budget_waits_until_half_is_consumed() {
        let c = InboundCredit::new(100);
        let a = c.take(60);
        let b = c.take(60);
        assert!(c.is_over());
        let waiter = tokio::spawn(c.clone().drained());
        drop(a);
        assert_eq!(c.outstanding(), 60);
        assert!(!waiter.is_finished() || c.outstanding() <= 50);
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("drained resolves once credit is returned")
            .unwrap();
        assert_eq!(c.outstanding(), 0);
    }
}
