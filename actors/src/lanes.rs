//! Broadcast lanes: one task per session thread and network that queues a broadcast frame to
//! the sessions on its thread.
//!
//! Queueing a frame means copying it into the peer's outbox, which the peer's writer reads on
//! the session thread. Done by the registry (one thread) for every peer, each copy went to a
//! buffer last touched by another core, and the registry's thread did all of them. Handed to the
//! lanes, each session thread copies for its own sessions, into warm buffers, in parallel, and
//! wakes its writers without a cross-thread wake-up.
//!
//! The registry stays the only authority on who is connected: it sends each lane the
//! membership changes (`Add` when it registers a connection, `Remove` when it drops one).
//! `Network::broadcast` puts each broadcast into the same channels itself (no registry round
//! trip, which cost a cross-thread hop per broadcast once the registry got its own thread), so
//! every lane applies a broadcast to exactly the connections whose registration it had been told
//! of before the broadcast entered its channel.
//!
//! A direct send to a session whose lane still holds broadcasts goes through the lane too
//! ([`LaneLink`]), so a broadcast followed by a send reaches a peer in that order.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::constants::LANE_BACKLOG_BYTES;
use crate::handle::PeerHandle;
use crate::level::Level;
use crate::ConnId;

/// What the registry tells a lane.
pub(crate) enum LaneMsg {
    /// A connection on this lane's thread was registered.
    Add(IpAddr, PeerHandle),
    /// The connection `ConnId` of that IP left the registry.
    Remove(IpAddr, ConnId),
    /// Queue `frame` to every member except `except`.
    Broadcast {
        frame: Bytes,
        except: Option<IpAddr>,
    },
    /// A direct send made while this lane had broadcasts pending: queued after them, so that a
    /// broadcast followed by a send reaches the peer in that order. Its bytes are already
    /// counted against the peer's outbound budget.
    Direct { handle: PeerHandle, frame: Bytes },
}

/// A session's end of its thread's lane: where its direct sends go while the lane is busy.
#[derive(Clone)]
pub(crate) struct LaneLink {
    /// Index of the lane (and of its session thread).
    pub(crate) index: usize,
    tx: mpsc::UnboundedSender<LaneMsg>,
    backlog: Arc<Backlog>,
}

impl LaneLink {
    /// Whether broadcasts (or sends routed behind them) are waiting on this lane. A `false`
    /// read after a broadcast returned means the lane has queued it into the outboxes.
    pub(crate) fn is_busy(&self) -> bool {
        self.backlog.bytes.get() > 0
    }

    /// Queues a broadcast frame to every member of this lane but `except`, behind what the lane
    /// holds (membership changes the registry sent before are applied first). Sent by
    /// `Network::broadcast` itself: no registry hop per broadcast.
    pub(crate) fn broadcast(&self, frame: &Bytes, except: Option<IpAddr>) {
        self.backlog.bytes.add(frame.len());
        let sent = self.tx.send(LaneMsg::Broadcast {
            frame: frame.clone(),
            except,
        });
        if sent.is_err() {
            self.backlog.bytes.undo_add(frame.len());
        }
    }

    /// Waits while the lane is far behind (see [`Backlog::room`]).
    pub(crate) async fn room(&self) {
        self.backlog.room().await;
    }

    /// Queues `frame` for `handle` behind what the lane holds; false if the lane is gone.
    pub(crate) fn direct(&self, handle: PeerHandle, frame: Bytes) -> bool {
        let len = frame.len();
        self.backlog.bytes.add(len);
        if self.tx.send(LaneMsg::Direct { handle, frame }).is_err() {
            self.backlog.bytes.undo_add(len);
            return false;
        }
        true
    }
}

/// The registry's end of one lane: membership changes.
pub(crate) struct Lane {
    tx: mpsc::UnboundedSender<LaneMsg>,
    backlog: Arc<Backlog>,
}

/// Bytes of broadcast frames handed to a lane and not yet queued to its sessions. The lane's
/// channel is unbounded; this is what bounds it: [`crate::Network::broadcast`] waits while a
/// lane is more than [`LANE_BACKLOG_BYTES`] behind.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    bytes: Level,
    /// The lane task is gone (its thread stopped): nothing will drain it any more.
    gone: AtomicBool,
}

impl Backlog {
    /// Waits while the lane is more than [`LANE_BACKLOG_BYTES`] behind, until it has caught up
    /// to half of that (or is gone).
    pub(crate) async fn room(&self) {
        if self.bytes.get() > LANE_BACKLOG_BYTES {
            self.bytes
                .at_most(LANE_BACKLOG_BYTES / 2, || self.gone.load(Ordering::SeqCst))
                .await;
        }
    }
}

/// Marks the backlog gone when the lane task ends or is dropped with its thread.
struct GoneOnDrop(Arc<Backlog>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::SeqCst);
        self.0.bytes.wake_all();
    }
}

impl Lane {
    /// Starts the lane task on the current thread (a session thread) and returns its end.
    pub(crate) fn spawn_here() -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        actix_rt::spawn(run_lane(rx, GoneOnDrop(backlog.clone())));
        Lane { tx, backlog }
    }

    /// The sessions' end of this lane, the one at `index`.
    pub(crate) fn link(&self, index: usize) -> LaneLink {
        LaneLink {
            index,
            tx: self.tx.clone(),
            backlog: self.backlog.clone(),
        }
    }

    pub(crate) fn add(&mut self, ip: IpAddr, handle: PeerHandle) {
        let _ = self.tx.send(LaneMsg::Add(ip, handle));
    }

    pub(crate) fn remove(&mut self, ip: IpAddr, conn_id: ConnId) {
        let _ = self.tx.send(LaneMsg::Remove(ip, conn_id));
    }
}

/// Applies membership changes and broadcasts in order until the registry is gone.
async fn run_lane(mut rx: mpsc::UnboundedReceiver<LaneMsg>, backlog: GoneOnDrop) {
    let mut members: HashMap<IpAddr, PeerHandle> = HashMap::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            LaneMsg::Add(ip, handle) => {
                members.insert(ip, handle);
            }
            LaneMsg::Remove(ip, conn_id) => {
                if members.get(&ip).is_some_and(|h| h.conn_id() == conn_id) {
                    members.remove(&ip);
                }
            }
            LaneMsg::Broadcast { frame, except } => {
                for (ip, handle) in &members {
                    if Some(*ip) != except {
                        handle.send_shared(&frame);
                    }
                }
                backlog.0.bytes.sub(frame.len());
            }
            LaneMsg::Direct { handle, frame } => {
                handle.send_reserved(&frame);
                backlog.0.bytes.sub(frame.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_broadcaster_waits_while_a_lane_is_far_behind() {
        let backlog = Arc::new(Backlog::default());
        // Within the limit: no wait at all.
        backlog.bytes.add(LANE_BACKLOG_BYTES);
        backlog.room().await;
        // Over it: waits until the lane is down to half.
        backlog.bytes.add(1);
        let waiter = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.room().await }
        });
        settle().await;
        assert!(!waiter.is_finished(), "over the limit");
        backlog.bytes.sub(LANE_BACKLOG_BYTES / 2);
        settle().await;
        assert!(!waiter.is_finished(), "one byte above half");
        backlog.bytes.sub(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("resolves at half the limit")
            .unwrap();
    }

    #[tokio::test]
    async fn a_broadcaster_does_not_wait_for_a_lane_that_is_gone() {
        let backlog = Arc::new(Backlog::default());
        backlog.bytes.add(2 * LANE_BACKLOG_BYTES);
        let waiter = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.room().await }
        });
        settle().await;
        assert!(!waiter.is_finished());
        drop(GoneOnDrop(backlog.clone()));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("resolves once the lane is gone")
            .unwrap();
    }
}
