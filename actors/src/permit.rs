//! `Permit`: one slot of a counted limit (inbound connections, pending handshakes), released
//! when dropped. Taken by the acceptor and held by the session for as long as the slot is in
//! use, so a limit can never leak a slot whichever way a session ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One slot of a counted limit; the count drops when the permit does.
#[derive(Debug)]
pub(crate) struct Permit(Arc<AtomicUsize>);

impl Permit {
    /// Takes a slot if fewer than `max` are taken.
    pub(crate) fn try_take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Permit> {
        let mut n = counter.load(Ordering::Acquire);
        loop {
            if n >= max {
                return None;
            }
            match counter.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Permit(counter.clone())),
                Err(actual) => n = actual,
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_up_to_the_limit_and_release_on_drop() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = Permit::try_take(&counter, 2).expect("first slot");
        let b = Permit::try_take(&counter, 2).expect("second slot");
        assert!(Permit::try_take(&counter, 2).is_none(), "limit reached");
        drop(a);
        assert_eq!(counter.load(Ordering::Acquire), 1);
        let _c = Permit::try_take(&counter, 2).expect("slot freed by the drop");
        drop(b);
        assert_eq!(counter.load(Ordering::Acquire), 1);
    }
}
