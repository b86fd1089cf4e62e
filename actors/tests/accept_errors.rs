//! The acceptor survives EMFILE without spinning: with the process out of file descriptors,
//! every accept fails; the loop pauses between attempts instead of retrying at once, and the
//! waiting connection is accepted as soon as descriptors are free again.
//!
//! This file holds a single test because it lowers the process's RLIMIT_NOFILE.

mod common;

use std::fs::File;
use std::time::{Duration, Instant};

use common::*;
use peerlink_actors::limits::ACCEPT_ERROR_PAUSE;
use tokio::net::TcpSocket;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count() as u64
}

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

fn set_nofile(lim: libc::rlimit) {
    // SAFETY: setrlimit reads the struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

#[actix::test]
async fn accept_errors_pause_and_the_waiting_peer_is_accepted_afterwards() {
    let node = TestNode::on(60).await;
    let errors = || node.net.metrics().accept_errors.get();
    // The client's socket exists before the descriptors run out; connect needs no new one.
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(lo(61), 0))
        .expect("bind client");

    let saved = nofile();
    set_nofile(libc::rlimit {
        rlim_cur: open_fds() + 16,
        rlim_max: saved.rlim_max,
    });
    let mut filler: Vec<File> = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        filler.push(f);
        assert!(filler.len() < 64, "the lowered limit bounds the filler");
    }

    let stream = tokio::time::timeout(WAIT, socket.connect(node.addr()))
        .await
        .expect("the kernel completes the handshake without the acceptor")
        .expect("connect");
    let first = eventually("a first failed accept", || {
        let n = errors();
        async move { (n >= 1).then(Instant::now) }
    })
    .await;
    let before = errors();
    eventually("five more failed accepts", || {
        let n = errors();
        async move { (n >= before + 5).then_some(()) }
    })
    .await;
    let elapsed = first.elapsed();
    // A spinning loop would fail thousands of times in this window; a pausing one at most once
    // per pause.
    assert!(
        elapsed >= ACCEPT_ERROR_PAUSE * 4,
        "5 accept errors within {elapsed:?}: the accept loop does not pause"
    );
    let rate_bound = elapsed.as_millis() / ACCEPT_ERROR_PAUSE.as_millis() + 2;
    assert!(
        u128::from(errors() - before) <= rate_bound + 5,
        "{} errors in {elapsed:?}",
        errors() - before
    );

    // Descriptors come back: the waiting connection is accepted and gets the node's Hello.
    drop(filler);
    set_nofile(saved);
    let mut peer = RawPeer::from_stream(stream).await;
    let hello = tokio::time::timeout(Duration::from_secs(5), peer.expect_hello())
        .await
        .expect("the node greets the connection that waited through EMFILE");
    assert_eq!(hello.nonce, node.net.node_nonce());
}
