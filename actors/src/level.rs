//! [`Level`]: a byte count that one side raises and another lowers, which a waiter can await
//! falling to a mark without polling. Used for a peer's queued outbound bytes
//! ([`crate::PeerHandle::drained_to`]) and for the backlog of a broadcast lane.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A byte count with waiters.
#[derive(Debug, Default)]
pub(crate) struct Level {
    bytes: AtomicUsize,
    waiters: AtomicUsize,
    lowered: Notify,
}

impl Level {
    /// Current value.
    pub(crate) fn get(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Adds `n`; returns the value before.
    pub(crate) fn add(&self, n: usize) -> usize {
        self.bytes.fetch_add(n, Ordering::SeqCst)
    }

    /// Subtracts `n` and wakes the waiters, if any, to look at the new value.
    pub(crate) fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::SeqCst);
        // SeqCst on both sides: either a waiter registered before this load (and is woken), or
        // its own check after registering sees the new value.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.lowered.notify_waiters();
        }
    }

    /// Subtracts `n` without waking anyone (the count is being given back, not drained).
    pub(crate) fn undo_add(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::SeqCst);
    }

    /// Wakes every waiter so that it rechecks its own exit condition (e.g. a close).
    pub(crate) fn wake_all(&self) {
        self.lowered.notify_waiters();
    }

    /// Resolves once the value is at most `mark`, or `done()` is true; `done` is checked after
    /// every wake-up (see [`Level::wake_all`]).
    pub(crate) async fn at_most(&self, mark: usize, done: impl Fn() -> bool) {
        let _waiting = Waiting::new(&self.waiters);
        loop {
            let lowered = self.lowered.notified();
            tokio::pin!(lowered);
            lowered.as_mut().enable();
            if self.get() <= mark || done() {
                return;
            }
            lowered.await;
        }
    }
}

/// Counts a waiter for as long as it waits, also when its future is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Self(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_resolves_when_the_level_falls_to_the_mark() {
        let level = Arc::new(Level::default());
        level.add(100);
        let waiter = tokio::spawn({
            let level = level.clone();
            async move { level.at_most(40, || false).await }
        });
        // Wait until the waiter is registered, then lower in two steps.
        while level.waiters.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        level.sub(50);
        assert_eq!(level.get(), 50);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "50 is above the mark of 40");
        level.sub(20);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("resolves once at the mark")
            .unwrap();
        assert_eq!(level.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_waiter_resolves_on_done_after_wake_all() {
        let level = Arc::new(Level::default());
        level.add(100);
        let done = Arc::new(AtomicBool::new(false));
        let waiter = tokio::spawn({
            let (level, done) = (level.clone(), done.clone());
            async move { level.at_most(0, || done.load(Ordering::SeqCst)).await }
        });
        while level.waiters.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        done.store(true, Ordering::SeqCst);
        level.wake_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("resolves once done")
            .unwrap();
        assert_eq!(level.get(), 100);
    }
}
