//! The cluster transport: QUIC (quinn) with mutual TLS, one bidirectional
//! stream per request and response, each message one frame of
//! [`dstream_core::wire`].
//!
//! A malformed or truncated frame, or a peer speaking another protocol
//! version, closes that connection (with the reason) and is logged; the
//! node's other connections go on.

pub mod tls;

use std::net::SocketAddr;

use dstream_core::wire::{self, FrameReader, Message};

use crate::Error;

/// Largest message read from one stream.
const READ_LIMIT: usize = wire::MAX_FRAME as usize + 8;

fn net_err(what: impl Into<String>, e: impl std::fmt::Display) -> Error {
    Error::Net {
        what: what.into(),
        message: e.to_string(),
    }
}

/// A server endpoint on `addr` with this node's identity.
pub fn server(addr: SocketAddr, id: &tls::Identity) -> Result<quinn::Endpoint, Error> {
    let cfg = id.server_config()?;
    quinn::Endpoint::server(cfg, addr).map_err(|e| net_err(format!("listening on {addr}"), e))
}

/// An endpoint on `addr` that both accepts peers and connects to them,
/// with this node's identity (workers: peers fetch blocks from it, and it
/// fetches from them).
pub fn endpoint(addr: SocketAddr, id: &tls::Identity) -> Result<quinn::Endpoint, Error> {
    let mut ep = server(addr, id)?;
    ep.set_default_client_config(id.client_config()?);
    Ok(ep)
}

/// A client endpoint with this node's identity.
pub fn client(id: &tls::Identity) -> Result<quinn::Endpoint, Error> {
    let mut ep = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
        .map_err(|e| net_err("opening a client endpoint", e))?;
    ep.set_default_client_config(id.client_config()?);
    Ok(ep)
}

/// Connects to `addr` (a peer of the same cluster).
pub async fn connect(ep: &quinn::Endpoint, addr: SocketAddr) -> Result<quinn::Connection, Error> {
    ep.connect(addr, tls::SERVER_NAME)
        .map_err(|e| net_err(format!("connecting to {addr}"), e))?
        .await
        .map_err(|e| net_err(format!("connecting to {addr}"), e))
}

/// The next incoming connection that completes the handshake. A peer
/// refused by mutual TLS (no certificate, or one another CA signed) is
/// logged and returned as an error; `None` when the endpoint is closed.
pub async fn accept(ep: &quinn::Endpoint) -> Option<Result<quinn::Connection, Error>> {
    let incoming = ep.accept().await?;
    let peer = incoming.remote_address();
    Some(match incoming.await {
        Ok(c) => Ok(c),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "refused a peer");
            Err(net_err(format!("refused {peer}"), e))
        }
    })
}

/// Reads one message from a stream (to its end).
pub async fn read(recv: &mut quinn::RecvStream) -> Result<Message, Error> {
    let bytes = recv
        .read_to_end(READ_LIMIT)
        .await
        .map_err(|e| net_err("reading a stream", e))?;
    let mut r = FrameReader::new();
    r.push(&bytes);
    let msg = r
        .next_message::<Message>()
        .map_err(|e| net_err("decoding a message", e))?;
    match msg {
        Some(m) => {
            r.finish().map_err(|e| net_err("decoding a message", e))?;
            Ok(m)
        }
        None => Err(net_err(
            "decoding a message",
            wire::WireError::Truncated(bytes.len()),
        )),
    }
}

/// Writes one message and ends the stream.
pub async fn write(send: &mut quinn::SendStream, msg: &Message) -> Result<(), Error> {
    let bytes = wire::encode(msg).map_err(|e| net_err("encoding a message", e))?;
    send.write_all(&bytes)
        .await
        .map_err(|e| net_err("writing a stream", e))?;
    send.finish().map_err(|e| net_err("finishing a stream", e))
}

/// Sends a request on a new stream and waits for the response.
pub async fn request(conn: &quinn::Connection, msg: &Message) -> Result<Message, Error> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| net_err("opening a stream", e))?;
    write(&mut send, msg).await?;
    read(&mut recv).await
}

/// Answers every request on `conn` with `handler` until the connection
/// closes, each request concurrently. A request that is not a whole,
/// well-formed frame of this protocol version closes the connection, with
/// the error as the reason, and is logged.
pub async fn serve<F, Fut>(conn: quinn::Connection, handler: F)
where
    F: Fn(Message) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Message> + Send + 'static,
{
    let peer = conn.remote_address();
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection closed");
                return;
            }
        };
        let handler = handler.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            let answer = match read(&mut recv).await {
                Ok(m) => handler(m).await,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "bad request; closing the connection");
                    let reason = e.to_string();
                    let reason = &reason.as_bytes()[..reason.len().min(512)];
                    conn.close(quinn::VarInt::from_u32(1), reason);
                    return;
                }
            };
            if let Err(e) = write(&mut send, &answer).await {
                tracing::warn!(%peer, error = %e, "could not answer");
            }
        });
    }
}
