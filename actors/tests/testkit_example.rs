//! The test kit example shown in README.md (a test checks that README shows this file's code).

// README example begins
use actix::prelude::*;
use peerlink_actors::testkit::FakePeer;
use peerlink_actors::{DisconnectReason, Inbound};

/// The actor under test: answers `Get(n)` with `Value(n * 2)`, and disconnects a peer that
/// sends `Value` (only servers send values).
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
enum Msg {
    Get(u64),
    Value(u64),
}

struct Doubler;
impl Actor for Doubler {
    type Context = Context<Self>;
}
impl Handler<Inbound<Msg>> for Doubler {
    type Result = ();
    fn handle(&mut self, inbound: Inbound<Msg>, _: &mut Context<Self>) {
        for msg in inbound.msgs() {
            match msg {
                Msg::Get(n) => {
                    let _ = inbound.from.send(&Msg::Value(n * 2));
                }
                Msg::Value(_) => inbound.from.disconnect(DisconnectReason::Misbehaving),
            }
        }
    }
}

#[actix::test]
async fn doubler_answers_on_the_same_connection_and_drops_misbehaving_peers() {
    let app = Doubler.start().recipient();
    let mut peer = FakePeer::<Msg>::new("127.0.0.2".parse().unwrap());
    peer.deliver(&app, [Msg::Get(1), Msg::Get(21)]);
    assert_eq!(peer.next_sent().await, Some(Msg::Value(2)));
    assert_eq!(peer.next_sent().await, Some(Msg::Value(42)));

    let rude = FakePeer::<Msg>::new("127.0.0.3".parse().unwrap());
    rude.deliver(&app, [Msg::Value(7)]);
    // The actor's request reaches the fake session like any message: wait for it.
    for _ in 0..1000 {
        if rude.close_requested().is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(rude.close_requested(), Some(DisconnectReason::Misbehaving));
}
// README example ends

#[test]
fn readme_shows_this_example() {
    let this = include_str!("testkit_example.rs");
    let start =
        this.find("// README example begins\n").unwrap() + "// README example begins\n".len();
    let end = this.find("// README example ends").unwrap();
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&this[start..end]),
        "README.md must show the test kit example exactly as in actors/tests/testkit_example.rs"
    );
}
