//! The cluster: a coordinator process scheduling the batches of submitted
//! jobs on worker processes, over QUIC with mutual TLS.
//!
//! - [`coordinator`] drives one core [`Coordinator`](dstream_core::coordinator::Coordinator)
//!   per job with tokio and quinn: workers register and send heartbeats,
//!   tasks go out, finished tasks come back; each finished batch's outputs
//!   are fetched from the workers and written by the job's sinks, in batch
//!   order.
//! - [`worker`] loads jobs (compiles their plugins), runs tasks over the
//!   blocks in its store, fetches the inputs it lacks from the workers
//!   holding them, and serves its blocks to peers.
//! - [`client`]: what `dstream submit` and `dstream status` send.
//!
//! Every request is one QUIC stream with one framed message each way
//! ([`net`](crate::net)).

pub mod client;
pub mod coordinator;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dstream_core::Batch;
use dstream_core::job::{Job, JobFile};
use dstream_core::plan::BlockId;
use dstream_core::wire::{JobSpec, Message, Peer};
use dstream_wasm::{Plugin, Runtime};

use crate::{Error, net, plugins};

/// How often workers send heartbeats.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// The default address of the coordinator.
pub const DEFAULT_COORDINATOR: &str = "127.0.0.1:7077";

fn job_err(message: impl Into<String>) -> Error {
    Error::Job(message.into())
}

/// A job with its plugins compiled.
#[derive(Debug)]
pub(crate) struct LoadedJob {
    pub(crate) job: Job,
    pub(crate) plugins: BTreeMap<String, Plugin>,
}

/// Parses `spec`'s job file, compiles its plugins and resolves the job.
pub(crate) fn load_job(runtime: &Runtime, spec: &JobSpec) -> Result<LoadedJob, Error> {
    let file = JobFile::parse(&spec.text).map_err(|e| job_err(format!("job file:{e}")))?;
    let mut plugins = BTreeMap::new();
    for (name, _) in file.plugins() {
        let Some((_, bytes)) = spec.plugins.iter().find(|(n, _)| n == name) else {
            return Err(job_err(format!(
                "job file:{}",
                file.plugin_error(name, "its component was not sent")
            )));
        };
        let p = runtime
            .load_with(name, bytes, file.plugin_wasi(name))
            .map_err(|e| Error::Plugin {
                name: name.to_string(),
                message: e.to_string(),
            })?;
        plugins.insert(name.to_string(), p);
    }
    let job = file
        .resolve(&plugins::infos(&plugins))
        .map_err(|e| job_err(format!("job file:{e}")))?;
    Ok(LoadedJob { job, plugins })
}

/// A peer's connection, opened on first use; its lock is held while
/// connecting, so that concurrent requests to one peer share one handshake.
type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// Connections to peers by address, opened on first use and again when
/// one has closed. Each peer has its own slot: connecting to a peer that
/// does not answer (a dead worker, until the handshake times out) holds up
/// requests to that peer only.
#[derive(Debug, Clone)]
pub(crate) struct Peers {
    ep: quinn::Endpoint,
    conns: Arc<std::sync::Mutex<HashMap<SocketAddr, Slot>>>,
}

impl Peers {
    pub(crate) fn new(ep: quinn::Endpoint) -> Self {
        Self {
            ep,
            conns: Arc::default(),
        }
    }

    async fn conn(&self, addr: SocketAddr, fresh: bool) -> Result<quinn::Connection, Error> {
        let slot: Slot = self
            .conns
            .lock()
            .expect("peers lock")
            .entry(addr)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if !fresh
            && let Some(c) = slot.as_ref()
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let c = net::connect(&self.ep, addr).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Sends `msg` to the peer at `addr` and waits for its answer; a
    /// connection that broke is opened again once.
    pub(crate) async fn request(&self, addr: &str, msg: &Message) -> Result<Message, Error> {
        let addr: SocketAddr = addr.parse().map_err(|e| Error::Net {
            what: format!("peer address `{addr}`"),
            message: format!("{e}"),
        })?;
        let c = self.conn(addr, false).await?;
        match net::request(&c, msg).await {
            Ok(m) => Ok(m),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "request failed; connecting again");
                let c = self.conn(addr, true).await?;
                net::request(&c, msg).await
            }
        }
    }

    /// Fetches `block` (or one bucket of it) of `job` from the first of
    /// `holders` that has it.
    pub(crate) async fn fetch(
        &self,
        job: u32,
        block: BlockId,
        bucket: Option<u32>,
        holders: &[Peer],
    ) -> Result<Batch, Error> {
        let msg = Message::Fetch { job, block, bucket };
        let mut errors = Vec::new();
        for h in holders {
            match self.request(&h.addr, &msg).await {
                Ok(Message::Block { data, bounds }) => {
                    return Batch::from_parts(data, bounds).map_err(|e| Error::Net {
                        what: format!("block {block} from worker {}", h.worker),
                        message: e.to_string(),
                    });
                }
                Ok(Message::Error { message }) => {
                    errors.push(format!("worker {}: {message}", h.worker));
                }
                Ok(other) => errors.push(format!("worker {}: answered {other:?}", h.worker)),
                Err(e) => errors.push(format!("worker {}: {e}", h.worker)),
            }
        }
        Err(Error::Net {
            what: format!("fetching block {block}"),
            message: if errors.is_empty() {
                "no worker holds it".into()
            } else {
                errors.join("; ")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls;

    #[tokio::test]
    async fn a_peer_that_does_not_answer_holds_up_only_requests_to_it() {
        let dir = tempfile::tempdir().unwrap();
        tls::init(dir.path(), 2).unwrap();
        // A live peer answering every request with what it got.
        let id = tls::Identity::load(dir.path(), "worker-1").unwrap();
        let ep = net::server("127.0.0.1:0".parse().unwrap(), &id).unwrap();
        let live = ep.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Some(Ok(c)) = net::accept(&ep).await {
                tokio::spawn(net::serve(c, |m| async move { m }));
            }
        });
        // A silent one: a socket nobody reads, so the handshake waits for
        // the idle timeout.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let me = tls::Identity::load(dir.path(), "worker-2").unwrap();
        let peers = Peers::new(net::client(&me).unwrap());
        let stuck = {
            let peers = peers.clone();
            tokio::spawn(async move { peers.request(&silent_addr, &Message::Ack).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = peers.request(&live, &Message::Ack).await.unwrap();
        assert!(matches!(answer, Message::Ack), "{answer:?}");
        assert!(
            !stuck.is_finished(),
            "the live peer's answer waited for the silent one"
        );
        assert!(stuck.await.unwrap().is_err());
    }
}
