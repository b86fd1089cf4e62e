//! `Permit` and `PendingSlot`: slots of the acceptor's limits, released when dropped. Taken by
//! the acceptor and held by the session for as long as the slot is in use, so a limit can never
//! leak a slot whichever way a session ends (handshake done, refused, timed out, socket lost,
//! session never started).
//!
//! - `Permit`: one slot of a counted limit (inbound sockets), an atomic counter.
//! - `PendingSlot`: one admitted handshake of the acceptor's `Admission` policy (pending per IP,
//!   per subnet, in total). The policy lives in the acceptor on the control plane; the slot,
//!   dropped on a session thread, tells the acceptor with a message, so the policy stays a
//!   plain struct with one owner and no lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::Recipient;

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

/// One handshake admitted by the acceptor's `Admission` policy; dropping it ends the
/// handshake's pending state there (`Admission::end`).
#[derive(Debug)]
pub(crate) struct PendingSlot {
    ip: IpAddr,
    acceptor: Recipient<PendingEnded>,
}

impl PendingSlot {
    /// A slot for a handshake from `ip` that the acceptor admitted (`Admission::try_begin`
    /// returned Ok for it).
    pub(crate) fn new(ip: IpAddr, acceptor: Recipient<PendingEnded>) -> Self {
        Self { ip, acceptor }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        // `do_send` ignores the mailbox's capacity, so the end is never lost while the acceptor
        // runs; once it has stopped, its policy is gone with it.
        self.acceptor.do_send(PendingEnded { ip: self.ip });
    }
}

/// A handshake admitted by `Admission` ended (its session's [`PendingSlot`] was dropped).
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct PendingEnded {
    /// The canonical IP it came from.
    pub ip: std::net::IpAddr,
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

    /// Counts the ends it is told of, per IP.
    struct Ends(std::collections::HashMap<IpAddr, usize>);

    impl actix::Actor for Ends {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<PendingEnded> for Ends {
        type Result = ();
        fn handle(&mut self, msg: PendingEnded, _: &mut actix::Context<Self>) {
            *self.0.entry(msg.ip).or_default() += 1;
        }
    }

    #[derive(actix::Message)]
    #[rtype(result = "std::collections::HashMap<IpAddr, usize>")]
    struct Count;

    impl actix::Handler<Count> for Ends {
        type Result = actix::MessageResult<Count>;
        fn handle(&mut self, _: Count, _: &mut actix::Context<Self>) -> Self::Result {
            actix::MessageResult(self.0.clone())
        }
    }

    #[actix::test]
    async fn a_pending_slot_ends_exactly_once_when_dropped_on_any_thread() {
        use actix::Actor;
        let ends = Ends(Default::default()).start();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let slot_a = PendingSlot::new(a, ends.clone().recipient());
        let slot_b = PendingSlot::new(b, ends.clone().recipient());
        assert!(
            ends.send(Count).await.unwrap().is_empty(),
            "nothing ends early"
        );
        drop(slot_a);
        // Dropped on another thread, as a session thread does.
        std::thread::spawn(move || drop(slot_b)).join().unwrap();
        // Both ends were queued in the mailbox before this query, which is answered in order.
        let counted = ends.send(Count).await.unwrap();
        assert_eq!(counted.len(), 2);
        assert_eq!(counted.get(&a), Some(&1));
        assert_eq!(counted.get(&b), Some(&1));
    }
}
