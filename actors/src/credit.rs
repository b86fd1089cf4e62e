//! Inbound credit: bytes of application messages delivered by a session and not yet consumed by
//! the application, counted with a per-message overhead so that tiny messages cost something
//! too. Each [`crate::Inbound`] burst carries a [`Credit`] for its cost; dropping the burst
//! returns it. The count is a [`crate::level::Level`], the one byte-count waiter of the crate.
//! When a session's outstanding credit exceeds its budget, the session stops reading (its
//! mailbox and timers go on) until the application has consumed half of it, so a fast peer and
//! a slow application cost a bounded amount of memory and TCP pushes back on the peer.

use std::sync::Arc;

use crate::level::Level;

/// One session's outstanding inbound bytes.
#[derive(Debug)]
pub(crate) struct InboundCredit {
    bytes: Level,
    budget: usize,
}

/// Bytes of one delivered burst; returned to the session's budget on drop.
#[derive(Debug)]
pub struct Credit {
    counter: Arc<InboundCredit>,
    n: usize,
}

impl InboundCredit {
    pub(crate) fn new(budget: usize) -> Arc<Self> {
        Arc::new(Self {
            bytes: Level::default(),
            budget,
        })
    }

    /// Takes `n` bytes of credit for a burst about to be delivered.
    pub(crate) fn take(self: &Arc<Self>, n: usize) -> Credit {
        self.bytes.add(n);
        Credit {
            counter: self.clone(),
            n,
        }
    }

    /// Whether the outstanding bytes exceed the budget.
    pub(crate) fn is_over(&self) -> bool {
        self.bytes.get() > self.budget
    }

    /// Resolves once the outstanding bytes are at or below half the budget.
    pub(crate) async fn drained(self: Arc<Self>) {
        self.bytes.at_most(self.budget / 2, || false).await;
    }

    /// Bytes delivered and not yet consumed.
    pub(crate) fn outstanding(&self) -> usize {
        self.bytes.get()
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.counter.bytes.sub(self.n);
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
