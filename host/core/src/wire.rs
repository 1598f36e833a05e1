//! Messages between coordinator and workers, and their framing.
//!
//! A frame is `[length: u32 LE][version: u16 LE][postcard payload]`, the
//! length counting the version and the payload. A peer speaking another
//! protocol version is refused with [`WireError::Version`]; a frame longer
//! than [`MAX_FRAME`], or one cut short, is an error for that connection
//! only. The framing is sans-IO: [`FrameReader`] takes bytes as they come
//! and gives whole messages; the transport (QUIC streams in the runtime)
//! only moves bytes.
//!
//! ```
//! use dstream_core::wire::{FrameReader, Message, encode};
//!
//! let bytes = encode(&Message::Registered { worker: 7 }).unwrap();
//! let mut r = FrameReader::new();
//! r.push(&bytes[..3]);
//! assert_eq!(r.next_message::<Message>().unwrap(), None); // not whole yet
//! r.push(&bytes[3..]);
//! assert_eq!(r.next_message::<Message>().unwrap(), Some(Message::Registered { worker: 7 }));
//! ```

use serde::{Deserialize, Serialize};

use crate::job::NodeId;
use crate::plan::{BlockId, Task};

/// The protocol version this build speaks. 2: `JobStatus::set_aside`.
pub const VERSION: u16 = 2;

/// The largest frame accepted (a partition crosses in one frame).
pub const MAX_FRAME: u32 = 1 << 30;

/// A worker's id, given by the coordinator.
pub type WorkerId = u32;

/// Errors of framing and decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The peer speaks another protocol version.
    #[error("the peer speaks protocol version {got}, this build speaks {VERSION}")]
    Version {
        /// The peer's version.
        got: u16,
    },
    /// A frame over the size limit.
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(u64),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame ({0} bytes of it)")]
    Truncated(usize),
    /// A frame whose payload is not a message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// A worker as its peers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its id.
    pub worker: WorkerId,
    /// Its data address (`host:port`).
    pub addr: String,
}

/// A job as submitted: the job file's text and the plugin components it
/// names, so that no node needs the submitter's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job file's text.
    pub text: String,
    /// The job file's directory on the submitting machine: relative sink
    /// paths resolve there.
    pub base_dir: String,
    /// Each plugin by its name in the job, as component bytes.
    pub plugins: Vec<(String, Vec<u8>)>,
    /// Stop after this many batches (`None`: run until stopped).
    pub batches: Option<u64>,
}

/// What a worker has done, sent with its heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Tasks run.
    pub tasks_run: u64,
    /// Task inputs read from its own store.
    pub local_inputs: u64,
    /// Task inputs fetched from other workers.
    pub fetched_blocks: u64,
    /// Bytes of them.
    pub fetched_bytes: u64,
    /// Blocks other workers fetched from it.
    pub served_blocks: u64,
    /// Input blocks its receivers stored.
    pub received_blocks: u64,
    /// Copies of other workers' input blocks it stored.
    pub replica_blocks: u64,
    /// Blocks in its store now.
    pub blocks_held: u64,
    /// Bytes in its store now.
    pub bytes_held: u64,
}

/// One worker, as `dstream status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its id.
    pub worker: WorkerId,
    /// Its name (from its certificate's file name or `--name`).
    pub name: String,
    /// Its data address.
    pub addr: String,
    /// Task slots.
    pub slots: u32,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    /// What it reported.
    pub stats: WorkerStats,
}

/// One job, as `dstream status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Its id.
    pub job: u32,
    /// Its name.
    pub name: String,
    /// `loading`, `running`, `finished` or `failed: why`.
    pub state: String,
    /// Batches whose outputs are written.
    pub batches_done: u64,
    /// The last batch's processing time, in microseconds.
    pub last_processing_us: u64,
    /// The last batch's scheduling delay, in microseconds.
    pub last_delay_us: u64,
    /// Records written by its sinks so far.
    pub records_out: u64,
    /// Tasks of earlier batches run again to rebuild blocks lost with
    /// workers.
    pub recomputed: u64,
    /// Speculative copies of slow tasks launched.
    pub speculated: u64,
    /// Times a worker was set aside as slow for this job.
    pub set_aside: u64,
}

/// Everything coordinator, workers and the CLI say to each other. Each
/// request travels on its own stream and gets one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Worker to coordinator, first on its connection. Answer:
    /// [`Message::Registered`].
    Register {
        /// A name for logs and status.
        name: String,
        /// Tasks it runs at once.
        slots: u32,
        /// Where peers fetch blocks from it (`host:port`).
        data_addr: String,
    },
    /// The coordinator's answer to [`Message::Register`].
    Registered {
        /// The worker's id from now on.
        worker: WorkerId,
    },
    /// Worker to coordinator, every heartbeat interval.
    Heartbeat {
        /// Who.
        worker: WorkerId,
        /// What it has done so far.
        stats: WorkerStats,
    },
    /// Coordinator to worker: load this job (compile its plugins) before
    /// its tasks come.
    StartJob {
        /// Job id.
        job: u32,
        /// The job.
        spec: JobSpec,
        /// Where its checkpoints are (a directory every node reaches).
        checkpoint_dir: String,
    },
    /// Coordinator to worker: write these blocks into the checkpoint
    /// being made in `dir`. Answer: [`Message::BlocksWritten`].
    WriteBlocks {
        /// Job id.
        job: u32,
        /// The checkpoint's temporary directory.
        dir: String,
        /// The blocks.
        blocks: Vec<BlockId>,
    },
    /// The answer to [`Message::WriteBlocks`]: each block, its file and
    /// its records.
    BlocksWritten {
        /// (block, file name, records).
        entries: Vec<(BlockId, String, u64)>,
    },
    /// Coordinator to worker: the job is over, free what it holds.
    StopJob {
        /// Job id.
        job: u32,
    },
    /// Coordinator to worker: run the receiver of this source of the job.
    StartReceiver {
        /// Job id.
        job: u32,
        /// The source.
        source: NodeId,
    },
    /// Coordinator to worker: batch `batch` starts; make what the
    /// receiver of `source` got since the last cut that batch's input
    /// blocks, copy them to `replica`, then answer
    /// [`Message::InputCut`].
    CutInput {
        /// Job id.
        job: u32,
        /// The source.
        source: NodeId,
        /// The batch.
        batch: u64,
        /// The worker to hold a copy.
        replica: Option<Peer>,
    },
    /// The answer to [`Message::CutInput`]: the blocks stored.
    InputCut {
        /// Each block and its size in bytes.
        blocks: Vec<(BlockId, u64)>,
        /// Records in them.
        records: u64,
        /// The worker that stored a copy (none if the copy failed).
        replica: Option<WorkerId>,
    },
    /// Worker to worker: keep a copy of these blocks.
    StoreBlocks {
        /// Job id.
        job: u32,
        /// Each block's id, data buffer and offsets.
        blocks: Vec<(BlockId, Vec<u8>, Vec<u32>)>,
    },
    /// Coordinator to worker: run a task; `sources` says where each input
    /// block lives.
    RunTask {
        /// Job id.
        job: u32,
        /// The task.
        task: Task,
        /// For each input block, the workers holding it.
        sources: Vec<(BlockId, Vec<Peer>)>,
    },
    /// Coordinator to worker: another copy of this task won; stop it if it
    /// has not finished (it then reports [`Message::TaskFailed`] with
    /// `retry`).
    Cancel {
        /// Job id.
        job: u32,
        /// The task's output.
        block: BlockId,
    },
    /// Worker to coordinator: a task's output is in its block store.
    TaskDone {
        /// Job id.
        job: u32,
        /// The block computed.
        block: BlockId,
        /// Records in it.
        records: u64,
        /// Bytes in it.
        bytes: u64,
    },
    /// Worker to coordinator: a task failed.
    TaskFailed {
        /// Job id.
        job: u32,
        /// The block it was computing.
        block: BlockId,
        /// Why.
        message: String,
        /// True when it could not get its inputs (their holder is gone):
        /// worth running again once they are back. False when the
        /// operator failed, which it would do anywhere.
        retry: bool,
    },
    /// Coordinator to worker: blocks no later batch needs.
    Drop {
        /// Job id.
        job: u32,
        /// The blocks.
        blocks: Vec<BlockId>,
    },
    /// To a worker: send me a block (or one bucket of it).
    Fetch {
        /// Job id.
        job: u32,
        /// The block.
        block: BlockId,
        /// The bucket, for a shuffle block.
        bucket: Option<u32>,
    },
    /// The answer to [`Message::Fetch`]: a partition's raw parts.
    Block {
        /// The data buffer.
        data: Vec<u8>,
        /// The offsets.
        bounds: Vec<u32>,
    },
    /// CLI to coordinator: run this job. Answer: [`Message::Submitted`].
    Submit {
        /// The job.
        spec: JobSpec,
    },
    /// The answer to [`Message::Submit`].
    Submitted {
        /// The job's id.
        job: u32,
        /// Its name.
        name: String,
    },
    /// CLI to coordinator: workers and jobs. Answer: [`Message::Status`].
    GetStatus,
    /// The answer to [`Message::GetStatus`].
    Status {
        /// Workers in the cluster.
        workers: Vec<WorkerStatus>,
        /// Jobs, running or not.
        jobs: Vec<JobStatus>,
    },
    /// The answer to a request that needs nothing back.
    Ack,
    /// Any peer: something was wrong with what you sent.
    Error {
        /// What.
        message: String,
    },
}

/// Frames a message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let payload = postcard::to_allocvec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = payload.len() as u64 + 2;
    if len > u64::from(MAX_FRAME) {
        return Err(WireError::TooLarge(len));
    }
    let mut out = Vec::with_capacity(4 + len as usize);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reassembles frames from bytes as they arrive.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, WireError> {
        let Some(len) = self.buf.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)) else {
            return Ok(None);
        };
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(u64::from(len)));
        }
        if len < 2 {
            return Err(WireError::Malformed(format!("a frame of {len} bytes")));
        }
        let end = 4 + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let version = u16::from_le_bytes([self.buf[4], self.buf[5]]);
        if version != VERSION {
            return Err(WireError::Version { got: version });
        }
        let msg = postcard::from_bytes(&self.buf[6..end])
            .map_err(|e| WireError::Malformed(e.to_string()));
        self.buf.drain(..end);
        msg.map(Some)
    }

    /// Call at the end of the stream: an error if a frame was cut short.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Truncated(self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Aux, DatasetId, Input, Work};

    fn task() -> Task {
        let b = |batch| BlockId {
            dataset: DatasetId {
                node: crate::job::NodeId(3),
                batch,
                aux: Aux::Main,
            },
            part: 1,
        };
        Task {
            output: b(5),
            work: Work::Keyed {
                buckets: (2, 2),
                has_state: true,
            },
            inputs: vec![Input {
                block: b(4),
                bucket: None,
            }],
        }
    }

    #[test]
    fn messages_round_trip_byte_by_byte() {
        let msgs = vec![
            Message::Register {
                name: "w1".into(),
                slots: 2,
                data_addr: "127.0.0.1:1".into(),
            },
            Message::RunTask {
                job: 1,
                task: task(),
                sources: vec![(
                    task().inputs[0].block,
                    vec![Peer {
                        worker: 2,
                        addr: "127.0.0.1:2".into(),
                    }],
                )],
            },
            Message::Block {
                data: b"abc".to_vec(),
                bounds: vec![0, 1, 3],
            },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            bytes.extend(encode(m).unwrap());
        }
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for b in bytes.chunks(1) {
            r.push(b);
            while let Some(m) = r.next_message::<Message>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        r.finish().unwrap();
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut frame = encode(&Message::Registered { worker: 1 }).unwrap();
        // Another version.
        frame[4] = 9;
        let mut r = FrameReader::new();
        r.push(&frame);
        assert_eq!(
            r.next_message::<Message>(),
            Err(WireError::Version { got: 9 })
        );
        // Too large.
        let mut r = FrameReader::new();
        r.push(&u32::MAX.to_le_bytes());
        assert!(matches!(
            r.next_message::<Message>(),
            Err(WireError::TooLarge(_))
        ));
        // Garbage payload.
        let mut r = FrameReader::new();
        r.push(&[&[3, 0, 0, 0][..], &VERSION.to_le_bytes(), &[0xff]].concat());
        assert!(matches!(
            r.next_message::<Message>(),
            Err(WireError::Malformed(_))
        ));
        // Cut short.
        let good = encode(&Message::Registered { worker: 1 }).unwrap();
        let mut r = FrameReader::new();
        r.push(&good[..good.len() - 1]);
        assert_eq!(r.next_message::<Message>(), Ok(None));
        assert!(matches!(r.finish(), Err(WireError::Truncated(_))));
    }
}
