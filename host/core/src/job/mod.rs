//! Jobs: the TOML file a user writes, and the checked stream DAG made of it.
//!
//! A job has a batch interval, a checkpoint interval, plugins, sources, a DAG
//! of streams (one operator each) and sinks. Reading one takes two steps,
//! because checking operators needs the plugins' own descriptions and loading
//! plugins is I/O the core does not do:
//!
//! 1. [`JobFile::parse`] checks everything the file alone can tell: syntax,
//!    fields, durations, source and sink kinds, that every stream reads from
//!    something, that windows are multiples of the interval, that there is no
//!    cycle.
//! 2. [`JobFile::resolve`] takes the [`PluginInfo`] of each plugin the file
//!    names and checks operators, kinds, parameters and encodings, giving a
//!    [`Job`].
//!
//! Every error names the line, the column and the field.
//!
//! ```
//! use dstream_core::job::{JobFile, Op};
//!
//! let file = JobFile::parse(r#"
//! name = "counts"
//! interval = "1s"
//! [sources.lines]
//! kind = "generator"
//! rate = 1000
//! [streams.counts]
//! from = "lines"
//! count_by_key = true
//! [sinks.out]
//! from = "counts"
//! kind = "stdout"
//! "#).unwrap();
//! let job = file.resolve(&Default::default()).unwrap();
//! let counts = job.node_by_name("counts").unwrap();
//! assert!(matches!(job.node(counts).op(), Some(Op::CountByKey)));
//!
//! let err = JobFile::parse(r#"name = "x"
//! interval = "1s"
//! [sources.s]
//! kind = "generator"
//! rate = 10
//! [streams.a]
//! from = "nowhere"
//! count_by_key = true
//! "#).unwrap_err();
//! assert_eq!(err.line, 7);
//! assert_eq!(err.field, "streams.a.from");
//! ```

mod error;
mod resolve;
mod spec;

use std::path::PathBuf;
use std::time::Duration;

pub use error::JobError;
pub use spec::{JobFile, Wasi};

use crate::plugin::Encoding;
#[cfg(doc)]
use crate::plugin::PluginInfo;

/// A checked job: the stream DAG with every operator resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Job name.
    pub name: String,
    /// Batch interval.
    pub interval: Duration,
    /// Checkpoint every this many batches.
    pub checkpoint_every: u64,
    /// Partitions of every dataset (hash partitioning of keys).
    pub partitions: u32,
    /// Sources, then streams, in topological order: a node's inputs always
    /// come before it.
    pub nodes: Vec<Node>,
    /// Output operations.
    pub sinks: Vec<Sink>,
    /// Plugins by job-local name, with where they come from as written.
    pub plugins: Vec<(String, String)>,
}

/// Index of a node (source or stream) in [`Job::nodes`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub u32);

impl NodeId {
    /// As an index into [`Job::nodes`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A source or a stream of the DAG.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name in the job file.
    pub name: String,
    /// The nodes it reads (none for a source; two for a join).
    pub inputs: Vec<NodeId>,
    /// What it is.
    pub kind: NodeKind,
    /// How its keys are encoded.
    pub key: Codec,
    /// How its values are encoded.
    pub value: Codec,
    /// It has a dataset every `slide` batches (1 unless a window upstream
    /// slides further).
    pub slide: u64,
}

impl Node {
    /// Its operator, for a stream.
    pub fn op(&self) -> Option<&Op> {
        match &self.kind {
            NodeKind::Stream(op) => Some(op),
            NodeKind::Source(_) => None,
        }
    }
}

/// Source or stream.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// Records from outside: one unkeyed UTF-8 record per line.
    Source(Source),
    /// A stream made by one operator.
    Stream(Op),
}

/// Where a source's records come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Lines from a TCP socket.
    Tcp {
        /// Address to connect to (or to listen on).
        addr: String,
        /// Listen for connections instead of connecting.
        listen: bool,
    },
    /// New files appearing in a directory, read whole, one record per line.
    Files {
        /// The directory watched.
        dir: PathBuf,
    },
    /// Lines POSTed to an HTTP ingest endpoint.
    Http {
        /// Address to listen on.
        listen: String,
    },
    /// Synthetic records, seeded: the same batch number always gives the
    /// same records, so a generator is replayed from lineage, never stored.
    Generator(Generator),
}

impl Source {
    /// True when the source's input can be recomputed from the batch number
    /// alone (nothing to receive or store).
    pub fn is_replayable(&self) -> bool {
        matches!(self, Self::Generator(_))
    }
}

/// Settings of a generator source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generator {
    /// Records per second.
    pub rate: u64,
    /// Seed.
    pub seed: u64,
    /// What the lines look like.
    pub format: GenFormat,
    /// Length of each line in bytes (words formats pad or cut to it).
    pub record_bytes: u32,
}

/// What a generator's lines look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenFormat {
    /// `URL IP USER-AGENT` log lines over a skewed set of URLs.
    Pageviews,
    /// Words from a skewed vocabulary.
    Words,
    /// `GROUP ITEM SCORE` lines.
    Scores,
}

/// An output operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Sink {
    /// Name in the job file.
    pub name: String,
    /// The stream it writes.
    pub from: NodeId,
    /// Where it writes.
    pub kind: SinkKind,
}

/// Where a sink writes.
#[derive(Clone, Debug, PartialEq)]
pub enum SinkKind {
    /// Standard output: the first `limit` records of each batch.
    Stdout {
        /// Records shown per batch.
        limit: usize,
    },
    /// One file per batch in a directory, written under a temporary name and
    /// renamed: writing a batch again gives the same file, never a duplicate.
    Files {
        /// The directory.
        dir: PathBuf,
    },
    /// One HTTP POST per batch.
    Http {
        /// The URL.
        url: String,
    },
}

/// The operator of a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// One record in, one out (plugin).
    Map(PluginOp),
    /// One record in, any number out (plugin).
    FlatMap(PluginOp),
    /// Keep some records (plugin).
    Filter(PluginOp),
    /// Whole partition in, partition out (plugin).
    Transform(PluginOp),
    /// All records of its inputs.
    Union,
    /// One record per key of this batch, values combined.
    ReduceByKey(Reducer),
    /// Records per key in this batch.
    CountByKey,
    /// One record per key ever seen, values combined over all batches (state).
    RunningReduce(Reducer),
    /// Per-key state updated by a plugin from this batch's values.
    UpdateStateByKey(PluginOp),
    /// All records of the last `length` batches, every `slide` batches.
    Window(Window),
    /// One record per key over a window, values combined; with an inverse the
    /// window is updated incrementally instead of recomputed.
    ReduceByKeyAndWindow {
        /// Combines values.
        reduce: Reducer,
        /// Takes values leaving the window out.
        inverse: Option<Inverse>,
        /// The window.
        window: Window,
    },
    /// Number of records in a window (one unkeyed record).
    CountByWindow(Window),
    /// Pairs of values with equal keys from two streams, same batch (inner
    /// join).
    Join,
}

impl Op {
    /// True for operators that need the records of one key together (a
    /// shuffle before them).
    pub fn is_keyed(&self) -> bool {
        matches!(
            self,
            Self::ReduceByKey(_)
                | Self::CountByKey
                | Self::RunningReduce(_)
                | Self::UpdateStateByKey(_)
                | Self::ReduceByKeyAndWindow { .. }
                | Self::CountByWindow(_)
                | Self::Join
        )
    }

    /// The plugin operator a narrow operator runs, if it is one.
    pub fn narrow_plugin_op(&self) -> Option<&PluginOp> {
        match self {
            Self::Map(p) | Self::FlatMap(p) | Self::Filter(p) | Self::Transform(p) => Some(p),
            _ => None,
        }
    }

    /// The window, for window operators.
    pub fn window(&self) -> Option<Window> {
        match self {
            Self::Window(w) | Self::CountByWindow(w) => Some(*w),
            Self::ReduceByKeyAndWindow { window, .. } => Some(*window),
            _ => None,
        }
    }

    /// True when the stream's dataset at one batch depends on its own dataset
    /// at an earlier batch (state, or a window updated with an inverse).
    pub fn is_stateful(&self) -> bool {
        matches!(
            self,
            Self::RunningReduce(_)
                | Self::UpdateStateByKey(_)
                | Self::CountByWindow(_)
                | Self::ReduceByKeyAndWindow {
                    inverse: Some(_),
                    ..
                }
        )
    }
}

/// An operator of a plugin, with the parameters the job gives it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PluginOp {
    /// Plugin name (job-local).
    pub plugin: String,
    /// Operator name.
    pub op: String,
    /// Parameters, as text.
    pub params: Vec<(String, String)>,
}

impl std::fmt::Display for PluginOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.plugin, self.op)
    }
}

/// How values of one key are combined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reducer {
    /// Built into the host: no Wasm call.
    Native(crate::reduce::Native),
    /// A plugin's reduce operator.
    Plugin(PluginOp),
}

/// How values leave a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inverse {
    /// Native subtraction, for the built-in `sum` and `count`.
    Subtract,
    /// A plugin's inverse operator.
    Plugin(PluginOp),
}

/// A window over batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// How many batches it covers.
    pub length: u64,
    /// Every how many batches it is computed.
    pub slide: u64,
}

/// How a key or value of a stream is encoded, for showing it to people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Codec {
    /// One encoding.
    Plain(Encoding),
    /// The value of a join: postcard `(bytes, bytes)` of two encoded values.
    Pair(Box<Codec>, Box<Codec>),
}

impl Codec {
    /// The encoding, when plain.
    pub fn encoding(&self) -> Option<Encoding> {
        match self {
            Self::Plain(e) => Some(*e),
            Self::Pair(..) => None,
        }
    }

    /// Renders bytes of this codec as text (see [`Encoding::render`]); a pair
    /// shows as `(left, right)`.
    pub fn render(&self, bytes: &[u8]) -> String {
        match self {
            Self::Plain(e) => e.render(bytes),
            Self::Pair(l, r) => match crate::reduce::split_pair(bytes) {
                Some((a, b)) => format!("({}, {})", l.render(a), r.render(b)),
                None => Encoding::Bytes.render(bytes),
            },
        }
    }
}

impl Job {
    /// The node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The node called `name`.
    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|i| NodeId(i as u32))
    }

    /// All node ids, sources first, in topological order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// The sources whose records are received (tcp, files, http: not
    /// replayable from a seed), with their settings, in node order.
    pub fn receivers(&self) -> impl Iterator<Item = (NodeId, &Source)> + '_ {
        self.node_ids().filter_map(|id| match &self.node(id).kind {
            NodeKind::Source(s) if !s.is_replayable() => Some((id, s)),
            _ => None,
        })
    }

    /// The nodes that read `id`.
    pub fn consumers(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.node_ids()
            .filter(move |c| self.node(*c).inputs.contains(&id))
    }

    /// True when `id` has a dataset at `batch` (its slide divides the batch
    /// number).
    pub fn computes_at(&self, id: NodeId, batch: u64) -> bool {
        batch.is_multiple_of(self.node(id).slide)
    }

    /// The checkpoint policy: true when state is to be checkpointed after
    /// `batch` (every [`checkpoint_every`](Self::checkpoint_every) batches).
    /// Once a checkpoint of `batch` is complete, nothing before it is needed
    /// to recompute later batches: the lineage is cut there.
    pub fn checkpoint_due(&self, batch: u64) -> bool {
        batch.is_multiple_of(self.checkpoint_every)
    }

    /// The plugins the job's operators use, by name.
    pub fn plugin_names(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|(n, _)| n.as_str())
    }
}
