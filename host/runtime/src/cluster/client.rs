//! What the CLI sends to a running coordinator: `dstream submit` and
//! `dstream status`.

use std::net::SocketAddr;

use dstream_core::wire::{JobSpec, JobStatus, Message, WorkerStatus};

use crate::Error;
use crate::net::{self, tls::Identity};

async fn ask(coordinator: SocketAddr, id: &Identity, msg: &Message) -> Result<Message, Error> {
    let ep = net::client(id)?;
    let conn = net::connect(&ep, coordinator)
        .await
        .map_err(|e| Error::Net {
            what: format!("no coordinator answered at {coordinator}"),
            message: format!(
                "{e} (is `dstream coordinator` running there, with this cluster's certificates?)"
            ),
        })?;
    let answer = net::request(&conn, msg).await;
    conn.close(quinn::VarInt::from_u32(0), b"done");
    ep.wait_idle().await;
    match answer? {
        Message::Error { message } => Err(Error::Net {
            what: format!("the coordinator at {coordinator}"),
            message,
        }),
        m => Ok(m),
    }
}

/// Sends a job to the coordinator; returns its id and name.
pub async fn submit(
    coordinator: SocketAddr,
    id: &Identity,
    spec: JobSpec,
) -> Result<(u32, String), Error> {
    match ask(coordinator, id, &Message::Submit { spec }).await? {
        Message::Submitted { job, name } => Ok((job, name)),
        other => Err(unexpected(coordinator, &other)),
    }
}

/// The cluster's workers and jobs.
pub async fn status(
    coordinator: SocketAddr,
    id: &Identity,
) -> Result<(Vec<WorkerStatus>, Vec<JobStatus>), Error> {
    match ask(coordinator, id, &Message::GetStatus).await? {
        Message::Status { workers, jobs } => Ok((workers, jobs)),
        other => Err(unexpected(coordinator, &other)),
    }
}

fn unexpected(coordinator: SocketAddr, m: &Message) -> Error {
    Error::Net {
        what: format!("the coordinator at {coordinator}"),
        message: format!("unexpected answer {m:?}"),
    }
}
