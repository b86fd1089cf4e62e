//! Every default and hard limit of the networking subsystem, each with its unit in its type or
//! name and the reason for its value. `NetworkConfig::default()` is built from these, and
//! `config/node.toml` in the node repeats them; tests below check that they agree with each other.

use std::time::Duration;

/// Wire protocol version spoken by this build. A peer with another version is refused with
/// `DisconnectReason::WrongVersion`: there is only one version so far, so no negotiation.
pub const PROTOCOL_VERSION: u32 = 1;

/// Maximum frame body accepted before the handshake completes. A Hello is about 100 bytes plus a
/// user agent of at most [`MAX_USER_AGENT_BYTES`]; 4 KiB leaves room and keeps an unauthenticated
/// peer from making us buffer more than that.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 4 * 1024;

/// Default maximum frame body after the handshake: big enough for a batch of blocks, small enough
/// that one frame per peer never dominates memory.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Hard ceiling for the configurable frame cap; the length prefix is 32 bits but nothing this
/// subsystem carries needs more than 64 MiB in one frame.
pub const MAX_FRAME_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// Longest user agent accepted in a Hello.
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// Maximum nesting depth of an application message. Application messages are records of
/// records; 32 levels is far above any honest message and far below a stack overflow.
pub const MAX_DECODE_DEPTH: usize = 32;

/// Default per-peer budget of bytes queued for sending but not yet written to the socket. Two
/// maximum frames: a peer that cannot absorb that much is too slow and is disconnected.
pub const DEFAULT_OUTBOUND_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// Default per-peer budget of application bytes delivered but not yet consumed by the
/// application. Over it, the session stops reading until half is consumed, so TCP pushes back on
/// a peer that sends faster than the application handles.
pub const DEFAULT_INBOUND_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// Default time a peer has to send a valid Hello after the TCP connection opens.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default interval between our pings on an idle or busy connection.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);

/// Default time a ping may stay unanswered before the connection is closed: three intervals, so
/// a single delayed pong on a busy link never cycles a healthy connection.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(90);

/// Default time a TCP connect may take before the dial counts as failed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default maximum of registered inbound connections. When they are full, a newcomer that
/// completes its handshake takes the place of one of them chosen by the eviction policy, or is
/// refused when every one is protected.
pub const DEFAULT_MAX_INBOUND: usize = 64;

/// Default maximum of outbound connections the connector keeps.
pub const DEFAULT_TARGET_OUTBOUND: usize = 8;

/// Default maximum of inbound connections still in the handshake at once; a flood of silent
/// sockets is cut off here and by the handshake timeout.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 32;

/// Default maximum of handshakes pending from one IP. A node dials another once (one entry per
/// IP), so an honest IP rarely has more than one pending; 4 leaves room for a restart racing
/// its old connection and for a few nodes behind one NAT, and keeps one IP holding silent
/// sockets to 4 of the [`DEFAULT_MAX_PENDING_HANDSHAKES`] slots.
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 4;

/// Default maximum of handshakes pending from one subnet (IPv4 /24, IPv6 /64): one subnet
/// holding silent sockets from many of its addresses takes at most half of the pending slots.
pub const DEFAULT_MAX_PENDING_PER_SUBNET: usize = 16;

/// Default accept rate of one network group (IPv4 /16, IPv6 /32), connections per second.
/// Honest peers of one group connect a few times a minute; 10/s refills a drained burst in
/// seconds.
pub const DEFAULT_ACCEPT_RATE_PER_GROUP_PER_S: u32 = 10;

/// Default accept burst of one network group: a whole data centre of honest nodes restarting
/// at once gets in at once, a connection storm from one group is cut to the rate.
pub const DEFAULT_ACCEPT_BURST_PER_GROUP: u32 = 40;

/// Default age below which an inbound connection is never evicted. Without it a busy node hit
/// by many bootstrapping peers evicts each newcomer for the next before it has learned
/// anything; with it a newcomer is refused until someone is old enough to make way.
pub const DEFAULT_EVICTION_MIN_AGE: Duration = Duration::from_secs(10);

/// Most network groups whose accept-rate state the acceptor keeps (full buckets are forgotten
/// first): bounds the state a stranger with many groups can grow.
pub const MAX_ACCEPT_GROUPS_TRACKED: usize = 4_096;

/// Default size of the connector's address book; older entries that never connected go first.
pub const DEFAULT_MAX_ADDRESS_BOOK: usize = 1024;

/// Default size of the ban list; the entry that expires soonest is evicted first.
pub const DEFAULT_MAX_BANS: usize = 1024;

/// First redial delay after a failure.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest redial delay: five minutes keeps a dead address from costing anything noticeable.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A connection that lived this long resets its address's backoff: it was a good connection and
/// its loss is news, not a pattern.
pub const DEFAULT_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// How often the connector looks for addresses to dial.
pub const DEFAULT_DIAL_TICK: Duration = Duration::from_millis(500);

/// How long a closing session may spend flushing its queue (and its Disconnect frame) before the
/// socket is dropped.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Beyond the close flush timeout, how long shutdown waits for sessions and writers to be gone
/// (their last bookkeeping after the flush) before it stops the threads anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Most peer events delivered to one subscriber and not yet handled by it. Beyond that, events
/// for that subscriber are dropped (and counted), so connection churn cannot grow a slow
/// subscriber's mailbox without limit.
pub const MAX_PENDING_EVENTS: usize = 1024;

/// How long the accept loop pauses after an accept error such as EMFILE, so that it never spins.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A broadcast waits while a session thread's broadcast lane has more than this many bytes of
/// earlier broadcasts still to queue (then until it is down to half): the broadcaster cannot
/// run ahead of the threads that copy its frames.
pub const LANE_BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// Frames at least this large are queued for the writer as the caller's shared bytes (a
/// broadcast's one encoding) instead of being copied into the peer's write buffer.
pub const LARGE_FRAME_BYTES: usize = 32 * 1024;

/// A writer keeps write buffers up to this size while idle; larger ones, grown by a burst, are
/// freed once it has been idle for [`WRITE_BUFFER_RELEASE_AFTER`], so that idle connections
/// hold no large buffers.
pub const WRITE_BUFFER_KEEP_BYTES: usize = 64 * 1024;

/// Idle time after which a writer frees write buffers larger than [`WRITE_BUFFER_KEEP_BYTES`].
pub const WRITE_BUFFER_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Initial read buffer of a session. Idle sessions stay small (a Hello with the longest user
/// agent is under 400 bytes, so 1 KiB holds the handshake); the buffer doubles while reads fill
/// it, up to [`READ_BUFFER_MAX_BYTES`], and grows further for large frames.
pub const READ_BUFFER_INITIAL_BYTES: usize = 1024;

/// Largest read buffer of a session: the buffer doubles from [`READ_BUFFER_INITIAL_BYTES`]
/// each time a read fills it, up to this size, so that busy connections read in large chunks
/// (one syscall per 64 KiB rather than per 2 KiB of small frames).
pub const READ_BUFFER_MAX_BYTES: usize = 64 * 1024;

/// A session frees its read buffer whenever it waits for the peer with nothing buffered (idle
/// sessions hold none), and allocates it again at the largest size it used, up to this: twice
/// [`READ_BUFFER_MAX_BYTES`], so that a stream of frames just over 64 KiB gets a buffer that
/// holds one whole, while a rare multi-megabyte frame is not reallocated on every wake-up.
pub const READ_BUFFER_REALLOC_MAX_BYTES: usize = 2 * READ_BUFFER_MAX_BYTES;

/// Largest encode scratch buffer a thread keeps between messages (`protocol::encode_app`);
/// a bigger one, left by a rare big message, is freed after use.
pub const ENCODE_SCRATCH_MAX_BYTES: usize = 1024 * 1024;

/// Number of recent disconnects the registry remembers for operators.
pub const RECENT_DISCONNECTS: usize = 64;

// The constants must agree with each other; checked at compile time, so a change that breaks
// an ordering does not build.
const _: () = {
    assert!(DEFAULT_HANDSHAKE_TIMEOUT.as_nanos() < DEFAULT_PING_INTERVAL.as_nanos());
    assert!(DEFAULT_PING_INTERVAL.as_nanos() < DEFAULT_PING_TIMEOUT.as_nanos());
    assert!(DEFAULT_CONNECT_TIMEOUT.as_nanos() <= DEFAULT_PING_INTERVAL.as_nanos());
    assert!(DEFAULT_BACKOFF_BASE.as_nanos() < DEFAULT_BACKOFF_MAX.as_nanos());
    assert!(DEFAULT_DIAL_TICK.as_nanos() <= DEFAULT_BACKOFF_BASE.as_nanos());
    assert!(MAX_HANDSHAKE_FRAME_BYTES < DEFAULT_MAX_FRAME_BYTES);
    assert!(DEFAULT_MAX_FRAME_BYTES <= MAX_FRAME_BYTES_CEILING);
    assert!(MAX_USER_AGENT_BYTES + 128 < MAX_HANDSHAKE_FRAME_BYTES);
    // A single maximum frame must fit into each budget, or it could never pass.
    assert!(DEFAULT_MAX_FRAME_BYTES + 4 <= DEFAULT_OUTBOUND_BUDGET_BYTES);
    assert!(DEFAULT_MAX_FRAME_BYTES <= DEFAULT_INBOUND_BUDGET_BYTES);
    assert!(READ_BUFFER_INITIAL_BYTES <= MAX_HANDSHAKE_FRAME_BYTES);
    assert!(READ_BUFFER_INITIAL_BYTES < READ_BUFFER_MAX_BYTES);
    assert!(READ_BUFFER_MAX_BYTES <= DEFAULT_MAX_FRAME_BYTES);
    assert!(READ_BUFFER_MAX_BYTES < READ_BUFFER_REALLOC_MAX_BYTES);
    // One IP or one subnet never takes every pending slot.
    assert!(DEFAULT_MAX_PENDING_PER_IP < DEFAULT_MAX_PENDING_PER_SUBNET);
    assert!(DEFAULT_MAX_PENDING_PER_SUBNET < DEFAULT_MAX_PENDING_HANDSHAKES);
    assert!(
        DEFAULT_ACCEPT_RATE_PER_GROUP_PER_S as usize <= DEFAULT_ACCEPT_BURST_PER_GROUP as usize
    );
    // A young connection is protected for longer than a handshake may take, so a newcomer
    // cannot be evicted by the next one before it has even registered.
    assert!(DEFAULT_HANDSHAKE_TIMEOUT.as_nanos() < DEFAULT_EVICTION_MIN_AGE.as_nanos());
};

/// Default interval between periodic saves of the address book: a kill -9 loses at most this
/// much of what the node learned, and a save of 5,000 entries costs milliseconds of a thread
/// that serves nobody.
pub const DEFAULT_ADDR_BOOK_SAVE_INTERVAL: Duration = Duration::from_secs(60);
