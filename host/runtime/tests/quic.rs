//! The cluster transport for real: QUIC on loopback, mutual TLS with
//! certificates from `tls::init`, framed messages.

use std::net::SocketAddr;
use std::path::Path;

use dstream_core::wire::{self, Message};
use dstream_runtime::net::{self, tls};

fn handler(m: Message) -> Message {
    match m {
        Message::Register { .. } => Message::Registered { worker: 1 },
        other => other,
    }
}

/// A coordinator-side server answering with `handler`; refusals go to the
/// returned channel.
fn server(dir: &Path) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let id = tls::Identity::load(dir, "coordinator").unwrap();
    let ep = net::server("127.0.0.1:0".parse().unwrap(), &id).unwrap();
    let addr = ep.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(c) = net::accept(&ep).await {
            match c {
                Ok(conn) => {
                    tokio::spawn(net::serve(conn, |m| async move { handler(m) }));
                }
                Err(e) => {
                    let _ = tx.send(e.to_string());
                }
            }
        }
    });
    (addr, rx)
}

fn register() -> Message {
    Message::Register {
        name: "w".into(),
        slots: 2,
        data_addr: "127.0.0.1:9".into(),
    }
}

#[tokio::test]
async fn peers_of_one_cluster_talk() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls::init(dir.path(), 2).unwrap();
    assert_eq!(files.len(), 2 + 2 * 4);
    assert!(
        tls::init(dir.path(), 1)
            .unwrap_err()
            .to_string()
            .contains("already there")
    );
    let (addr, _refusals) = server(dir.path());
    let worker = tls::Identity::load(dir.path(), "worker-2").unwrap();
    let ep = net::client(&worker).unwrap();
    let conn = net::connect(&ep, addr).await.unwrap();
    assert_eq!(
        net::request(&conn, &register()).await.unwrap(),
        Message::Registered { worker: 1 }
    );
    // Many requests on one connection, concurrently.
    let mut all = Vec::new();
    for w in 0..20 {
        let conn = conn.clone();
        all.push(tokio::spawn(async move {
            net::request(&conn, &Message::StopJob { job: w }).await
        }));
    }
    for (w, h) in all.into_iter().enumerate() {
        assert_eq!(
            h.await.unwrap().unwrap(),
            Message::StopJob { job: w as u32 }
        );
    }
}

#[tokio::test]
async fn a_worker_of_another_ca_is_refused_and_the_refusal_is_logged() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    tls::init(ours.path(), 1).unwrap();
    tls::init(theirs.path(), 1).unwrap();
    let (addr, mut refusals) = server(ours.path());
    // A worker whose certificate another CA signed, trusting our CA (so that
    // it is our server that refuses it).
    let mixed = tempfile::tempdir().unwrap();
    for f in ["worker-1.pem", "worker-1.key"] {
        std::fs::copy(theirs.path().join(f), mixed.path().join(f)).unwrap();
    }
    std::fs::copy(ours.path().join("ca.pem"), mixed.path().join("ca.pem")).unwrap();
    let intruder = tls::Identity::load(mixed.path(), "worker-1").unwrap();
    let ep = net::client(&intruder).unwrap();
    let outcome = match net::connect(&ep, addr).await {
        Ok(conn) => net::request(&conn, &register()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "an intruder was answered");
    let refusal = refusals.recv().await.unwrap();
    assert!(refusal.contains("refused 127.0.0.1"), "{refusal}");
    // And a worker trusting another CA refuses our server.
    let stranger = tls::Identity::load(theirs.path(), "worker-1").unwrap();
    let ep = net::client(&stranger).unwrap();
    let e = net::connect(&ep, addr).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test]
async fn a_malformed_or_truncated_frame_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    tls::init(dir.path(), 1).unwrap();
    let (addr, _r) = server(dir.path());
    let id = tls::Identity::load(dir.path(), "worker-1").unwrap();
    let ep = net::client(&id).unwrap();
    // A well-behaved connection, open all along.
    let bystander = net::connect(&ep, addr).await.unwrap();
    let good = wire::encode(&register()).unwrap();
    let mut other_version = good.clone();
    other_version[4] = 9;
    for (bytes, expect) in [
        (
            [
                &[5u8, 0, 0, 0][..],
                &wire::VERSION.to_le_bytes(),
                &[0xff; 3],
            ]
            .concat(),
            "malformed",
        ),
        (good[..good.len() - 2].to_vec(), "ended inside a frame"),
        (other_version, "protocol version 9"),
    ] {
        let conn = net::connect(&ep, addr).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        send.finish().unwrap();
        assert!(net::read(&mut recv).await.is_err());
        // The connection is closed, with the reason.
        let closed = conn.closed().await.to_string();
        assert!(closed.contains(expect), "{closed}");
        assert!(net::request(&conn, &register()).await.is_err());
        // The other connection still serves requests.
        assert_eq!(
            net::request(&bystander, &register()).await.unwrap(),
            Message::Registered { worker: 1 }
        );
    }
}
