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
//! membership changes (`Add` when it registers a connection, `Remove` when it drops one) and the
//! broadcasts through the same channel, in the order its mailbox handled them, so every lane
//! applies a broadcast to exactly the connections the registry held at that point.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::handle::PeerHandle;
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
}

/// The registry's end of one lane, with the number of members it has told the lane about.
pub(crate) struct Lane {
    tx: mpsc::UnboundedSender<LaneMsg>,
    members: usize,
}

impl Lane {
    /// Starts the lane task on the current thread (a session thread) and returns its end.
    pub(crate) fn spawn_here() -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        actix_rt::spawn(run_lane(rx));
        Lane { tx, members: 0 }
    }

    pub(crate) fn add(&mut self, ip: IpAddr, handle: PeerHandle) {
        self.members += 1;
        let _ = self.tx.send(LaneMsg::Add(ip, handle));
    }

    pub(crate) fn remove(&mut self, ip: IpAddr, conn_id: ConnId) {
        self.members = self.members.saturating_sub(1);
        let _ = self.tx.send(LaneMsg::Remove(ip, conn_id));
    }

    pub(crate) fn broadcast(&self, frame: &Bytes, except: Option<IpAddr>) {
        if self.members > 0 {
            let _ = self.tx.send(LaneMsg::Broadcast {
                frame: frame.clone(),
                except,
            });
        }
    }
}

/// Applies membership changes and broadcasts in order until the registry is gone.
async fn run_lane(mut rx: mpsc::UnboundedReceiver<LaneMsg>) {
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
            }
        }
    }
}
