//! A loaded plugin and the calls into it.

use dstream_core::job::Wasi;
use dstream_core::{Batch, Encoding, OperatorInfo, OperatorKind, ParamInfo, PluginInfo};
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, ComponentType, Lift, Lower, ResourceAny, TypedFunc,
};
use wasmtime::{Store, Trap};

use crate::Error;
use crate::host::{HostState, PluginPre, Stop, wit};
use crate::runtime::{Exports, Runtime};

/// A partition as the guest's `batch` record, lowered straight from the host's
/// buffers: no copy but the one into guest memory.
#[derive(ComponentType, Lower)]
#[component(record)]
struct BatchRef<'a> {
    data: &'a [u8],
    bounds: &'a [u32],
}

impl<'a> BatchRef<'a> {
    fn of(b: &'a Batch) -> Result<Self, Error> {
        if b.byte_len() > u32::MAX as usize / 2 {
            return Err(Error::BatchTooLarge {
                bytes: b.byte_len(),
            });
        }
        Ok(Self {
            data: b.data(),
            bounds: b.bounds(),
        })
    }
}

/// Input bytes per call when a record-wise operator (map, flat-map, filter,
/// or a pipeline of them) runs over a partition: it runs in several calls
/// inside one instance, each over a piece of about this size (whole
/// records), small enough for the guest's copy of it to stay in the core's
/// cache while the guest reads it, and only one piece's pages are reset when
/// the instance goes. Grep over 1M records of 100 bytes: 0.40 -> 0.47 of
/// native (one piece vs 1 MiB pieces; 256 KiB measured as good). A fixed
/// size, the same on every node, so a plugin that (wrongly) keeps state
/// from call to call still gives the same bytes everywhere.
pub const PIECE_BYTES: usize = 256 << 10;

/// A partition cut into pieces of about [`PIECE_BYTES`] (whole records),
/// each with its bounds rebased to 0 as the guest's `batch` wants them.
struct Pieces<'a> {
    data: &'a [u8],
    /// Per piece: its first record and its rebased bounds.
    pieces: Vec<(u32, Vec<u32>)>,
    /// Per piece: its byte range in `data`.
    ranges: Vec<std::ops::Range<usize>>,
}

impl<'a> Pieces<'a> {
    fn of(b: &'a Batch) -> Result<Self, Error> {
        BatchRef::of(b)?; // the size check
        let bounds = b.bounds();
        let mut pieces = Vec::new();
        let mut ranges = Vec::new();
        for r in b.cuts(PIECE_BYTES) {
            let bs = &bounds[2 * r.start..=2 * r.end];
            let base = bs[0];
            ranges.push(base as usize..bs[bs.len() - 1] as usize);
            pieces.push((r.start as u32, bs.iter().map(|x| x - base).collect()));
        }
        if pieces.is_empty() {
            // An empty batch is still one call.
            pieces.push((0, vec![0]));
            ranges.push(0..0);
        }
        Ok(Self {
            data: b.data(),
            pieces,
            ranges,
        })
    }

    fn iter(&self) -> impl Iterator<Item = BatchRef<'_>> {
        self.pieces
            .iter()
            .zip(&self.ranges)
            .map(|((_, bounds), r)| BatchRef {
                data: &self.data[r.clone()],
                bounds,
            })
    }

    /// The first record of each piece and its number of records.
    fn spans(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.pieces
            .iter()
            .map(|(start, bounds)| (*start, (bounds.len() / 2) as u32))
    }
}

/// `e`, raised over a piece whose first record is `start`, with its record
/// numbered in the whole partition. (In a pipeline the SDK numbers the
/// input record for a failure in its first stage; for a later stage the
/// number is within that stage's input, shifted all the same.)
fn in_partition(mut e: wit::OpError, start: u32) -> wit::OpError {
    e.record = e.record.map(|i| i.saturating_add(start));
    e
}

/// A fresh instance of a plugin and the calls made into it, each of whose
/// failures is turned into an [`Error`] naming plugin and operator.
struct Call<'p> {
    plugin: &'p Plugin,
    operator: &'p str,
    store: Option<Store<HostState>>,
    instance: Option<wasmtime::component::Instance>,
}

impl Call<'_> {
    fn store(&mut self) -> &mut Store<HostState> {
        self.store.as_mut().expect("instantiated")
    }

    /// Stops if the [`Cancel`](crate::Cancel) token in scope says so.
    fn check_cancelled(&self) -> Result<(), Error> {
        if crate::Cancel::current().is_some_and(|c| c.is_cancelled()) {
            return Err(Error::Cancelled {
                plugin: self.plugin.name.clone(),
                operator: self.operator.to_string(),
            });
        }
        Ok(())
    }

    /// The export `idx`, typed.
    fn func<P, R>(&mut self, idx: &ComponentExportIndex) -> Result<TypedFunc<P, R>, Error>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let instance = self.instance.expect("instantiated");
        instance
            .get_typed_func::<P, R>(self.store(), idx)
            .map_err(|e| Error::Invalid {
                plugin: self.plugin.name.clone(),
                message: format!("{e:#}"),
            })
    }

    /// Calls `func` with `args`.
    fn call<P, R>(&mut self, func: &TypedFunc<P, R>, args: P) -> Result<R, Error>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        func.call(self.store(), args).map_err(|e| {
            let store = self.store.as_ref().expect("instantiated");
            self.plugin.classify(self.operator, store, e)
        })
    }
}

/// One stage of [`Plugin::pipeline`]: an operator and its parameters.
#[derive(Clone, Debug, PartialEq, Eq, ComponentType, Lower)]
#[component(record)]
pub struct Stage {
    /// Operator name.
    pub op: String,
    /// Its parameters.
    pub params: Vec<(String, String)>,
}

type Params = [(String, String)];

/// What `lend` returns: empty lists at a region's two ends; their addresses
/// are lifted (and checked to be inside the instance's memory), not copied.
#[cfg(target_os = "linux")]
#[derive(ComponentType, Lift)]
#[component(record)]
struct Region {
    start: wasmtime::component::WasmList<u8>,
    end: wasmtime::component::WasmList<u8>,
}
type BatchResult = (Result<wit::Batch, wit::OpError>,);

/// A validated, compiled plugin. Every call runs in a fresh instance (taken
/// from the pool), so no state leaks from one call to the next and a call that
/// failed leaves nothing behind; a record-wise call (map, flat-map, filter,
/// a pipeline of them) calls the guest once per [`PIECE_BYTES`] piece of its
/// partition inside that instance. Cheap to share across threads.
pub struct Plugin {
    runtime: Runtime,
    name: String,
    info: PluginInfo,
    pre: PluginPre<HostState>,
    exports: Exports,
    wasi: Wasi,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn kind(k: wit::Kind) -> OperatorKind {
    match k {
        wit::Kind::Map => OperatorKind::Map,
        wit::Kind::FlatMap => OperatorKind::FlatMap,
        wit::Kind::Filter => OperatorKind::Filter,
        wit::Kind::Reduce => OperatorKind::Reduce,
        wit::Kind::Inverse => OperatorKind::Inverse,
        wit::Kind::UpdateState => OperatorKind::UpdateState,
        wit::Kind::Transform => OperatorKind::Transform,
    }
}

fn encoding(e: wit::Encoding) -> Encoding {
    use wit::Encoding as W;
    match e {
        W::None => Encoding::None,
        W::Bytes => Encoding::Bytes,
        W::Utf8 => Encoding::Utf8,
        W::U8 => Encoding::U8,
        W::U16 => Encoding::U16,
        W::U32 => Encoding::U32,
        W::U64 => Encoding::U64,
        W::S8 => Encoding::I8,
        W::S16 => Encoding::I16,
        W::S32 => Encoding::I32,
        W::S64 => Encoding::I64,
        W::F32 => Encoding::F32,
        W::F64 => Encoding::F64,
        W::Boolean => Encoding::Boolean,
        W::Postcard => Encoding::Postcard,
    }
}

fn info(i: wit::PluginInfo) -> PluginInfo {
    PluginInfo {
        name: i.name,
        version: i.version,
        operators: i
            .operators
            .into_iter()
            .map(|o| OperatorInfo {
                name: o.name,
                kind: kind(o.kind),
                description: o.description,
                params: o
                    .params
                    .into_iter()
                    .map(|p| ParamInfo {
                        name: p.name,
                        description: p.description,
                        required: p.required,
                    })
                    .collect(),
                input: (encoding(o.input_key), encoding(o.input_value)),
                output: (encoding(o.output_key), encoding(o.output_value)),
            })
            .collect(),
    }
}

impl Plugin {
    pub(crate) fn new(
        runtime: Runtime,
        name: String,
        pre: PluginPre<HostState>,
        exports: Exports,
        wasi: Wasi,
    ) -> Result<Self, Error> {
        let mut plugin = Self {
            runtime,
            name,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                operators: Vec::new(),
            },
            pre,
            exports,
            wasi,
        };
        let idx = plugin.exports.describe;
        let (described,): (wit::PluginInfo,) = plugin.invoke("describe", &idx, ())?;
        let described = info(described);
        let bad = |message: String| Error::BadDescription {
            plugin: plugin.name.clone(),
            message,
        };
        if described.operators.is_empty() {
            return Err(bad("it has no operators".into()));
        }
        let mut names: Vec<&str> = described
            .operators
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!("two operators are called `{}`", w[0])));
        }
        if names.iter().any(|n| n.is_empty() || n.contains('/')) {
            return Err(bad(
                "operator names must be non-empty and contain no `/`".into()
            ));
        }
        plugin.info = described;
        Ok(plugin)
    }

    /// The name the plugin was loaded under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> &crate::Limits {
        self.runtime.limits()
    }

    /// What the plugin said about itself at load.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The operator `op`, checked to exist, to be of one of `kinds`, and to be
    /// given its required parameters.
    fn check(
        &self,
        op: &str,
        kinds: &[OperatorKind],
        params: &Params,
    ) -> Result<&OperatorInfo, Error> {
        let info = self
            .info
            .operator(op)
            .ok_or_else(|| Error::UnknownOperator {
                plugin: self.name.clone(),
                operator: op.to_string(),
                available: self
                    .info
                    .operators
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if !kinds.contains(&info.kind) {
            return Err(Error::WrongKind {
                plugin: self.name.clone(),
                operator: op.to_string(),
                actual: info.kind,
                expected: kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
        if let Some(p) = info
            .params
            .iter()
            .find(|p| p.required && !params.iter().any(|(n, _)| *n == p.name))
        {
            return Err(Error::MissingParam {
                plugin: self.name.clone(),
                operator: op.to_string(),
                param: p.name.clone(),
            });
        }
        Ok(info)
    }

    /// Runs one export in a fresh instance.
    fn invoke<P, R>(&self, operator: &str, idx: &ComponentExportIndex, args: P) -> Result<R, Error>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let mut out = None;
        self.invoke_each(operator, idx, std::iter::once(args), |r| {
            out = Some(r);
            Ok(())
        })?;
        Ok(out.expect("one call"))
    }

    /// Runs one export once per item of `args`, one after the other in one
    /// fresh instance, handing each result to `each`; stops at the first
    /// error. (Pieces of one partition: the guest's input buffer is reused
    /// from call to call while it is still in the core's cache, and only
    /// the pages of one piece are reset when the instance goes.)
    fn invoke_each<P, R>(
        &self,
        operator: &str,
        idx: &ComponentExportIndex,
        args: impl IntoIterator<Item = P>,
        mut each: impl FnMut(R) -> Result<(), Error>,
    ) -> Result<(), Error>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        self.in_instance(operator, |call| {
            let func = call.func::<P, R>(idx)?;
            for args in args {
                // Between pieces too, a cancelled call stops at once.
                call.check_cancelled()?;
                each(call.call(&func, args)?)?;
            }
            Ok(())
        })
    }

    /// Runs `body` with a fresh instance of the plugin ([`Call`]), then
    /// reports what the plugin logged beyond the limit.
    fn in_instance<T>(
        &self,
        operator: &str,
        body: impl FnOnce(&mut Call<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut call = Call {
            plugin: self,
            operator,
            store: None,
            instance: None,
        };
        call.check_cancelled()?;
        let _slot = self.runtime.inner.slots.take();
        // Cancelled while it waited for a slot: stop before instantiating.
        call.check_cancelled()?;
        let mut store = self.runtime.store(&self.name, operator, self.wasi);
        let instance = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| Error::Instantiate {
                plugin: self.name.clone(),
                message: format!("{e:#}"),
            })?;
        call.store = Some(store);
        call.instance = Some(instance);
        let result = body(&mut call);
        let state = call.store.as_ref().expect("set above").data();
        if state.dropped_logs > 0 {
            tracing::warn!(
                plugin = %self.name,
                operator,
                dropped = state.dropped_logs,
                "plugin logged more than {} messages in one call; the rest were dropped",
                crate::host::MAX_LOGS_PER_CALL
            );
        }
        result
    }

    fn classify(&self, operator: &str, store: &Store<HostState>, e: wasmtime::Error) -> Error {
        let plugin = self.name.clone();
        let operator = operator.to_string();
        let state = store.data();
        match state.stopped {
            Some(Stop::Cancelled) => return Error::Cancelled { plugin, operator },
            Some(Stop::Deadline) => {
                return Error::Deadline {
                    plugin,
                    operator,
                    limit: self.runtime.limits().deadline,
                };
            }
            None => {}
        }
        if let Some(wanted) = state.memory_wanted {
            return Error::MemoryLimit {
                plugin,
                operator,
                wanted,
                limit: state.memory_limit,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Error::Deadline {
                plugin,
                operator,
                limit: self.runtime.limits().deadline,
            },
            Some(trap) => Error::Trap {
                plugin,
                operator,
                trap: trap.to_string(),
                guest_message: state.last_error.clone(),
            },
            None => Error::Trap {
                plugin,
                operator,
                trap: format!("{e:#}"),
                guest_message: state.last_error.clone(),
            },
        }
    }

    fn output(&self, op: &str, r: Result<wit::Batch, wit::OpError>) -> Result<Batch, Error> {
        let b = r.map_err(|e| self.op_error(op, e))?;
        Batch::from_parts(b.data, b.bounds).map_err(|e| self.bad_output(op, e.to_string()))
    }

    fn op_error(&self, op: &str, e: wit::OpError) -> Error {
        Error::Operator {
            plugin: self.name.clone(),
            operator: op.to_string(),
            record: e.record,
            message: e.message,
        }
    }

    fn one_input(
        &self,
        kind: OperatorKind,
        op: &str,
        params: &Params,
        input: &Batch,
    ) -> Result<Batch, Error> {
        self.check(op, &[kind], params)?;
        let idx = match kind {
            OperatorKind::Map => &self.exports.map,
            OperatorKind::FlatMap => &self.exports.flat_map,
            OperatorKind::Reduce => &self.exports.reduce,
            OperatorKind::Transform => &self.exports.transform,
            OperatorKind::Filter => return self.filter(op, params, input),
            OperatorKind::Inverse | OperatorKind::UpdateState => unreachable!("two inputs"),
        };
        if kind.is_record_wise() {
            // Record by record: in pieces, the outputs one after the other.
            let pieces = Pieces::of(input)?;
            let args = pieces.iter().map(|p| (op, params, p));
            return self.concat_each(op, idx, &pieces, args);
        }
        let (r,): BatchResult = self.invoke(op, idx, (op, params, BatchRef::of(input)?))?;
        self.output(op, r)
    }

    /// Runs a record-wise export (map, flat-map, or a pipeline of them) once
    /// per piece of a partition ([`Pieces`]), in one instance, and puts the
    /// outputs one after the other: the output of the whole partition.
    fn concat_each<P>(
        &self,
        label: &str,
        idx: &ComponentExportIndex,
        pieces: &Pieces<'_>,
        args: impl Iterator<Item = P>,
    ) -> Result<Batch, Error>
    where
        P: ComponentNamedList + Lower,
    {
        let mut out: Option<Batch> = None;
        let mut spans = pieces.spans();
        // One call's output was bounded by the guest's memory; pieces'
        // outputs, gathered here, are held to the same bound.
        let limit = self.runtime.limits().memory.min(u32::MAX as usize / 2);
        self.invoke_each(label, idx, args, |(r,): BatchResult| {
            let (start, _) = spans.next().expect("one span per piece");
            let b = self.output(label, r.map_err(|e| in_partition(e, start)))?;
            let so_far = out.as_ref().map_or(0, Batch::byte_len);
            if so_far + b.byte_len() > limit {
                return Err(Error::OutputLimit {
                    plugin: self.name.clone(),
                    operator: label.to_string(),
                    limit,
                });
            }
            match &mut out {
                None => out = Some(b),
                Some(o) => o.extend_from(&b),
            }
            Ok(())
        })?;
        Ok(out.unwrap_or_default())
    }

    /// Applies the map `op` to every record of `input`.
    pub fn map(&self, op: &str, params: &Params, input: &Batch) -> Result<Batch, Error> {
        self.one_input(OperatorKind::Map, op, params, input)
    }

    /// Applies the flat-map `op` to every record of `input`.
    pub fn flat_map(&self, op: &str, params: &Params, input: &Batch) -> Result<Batch, Error> {
        self.one_input(OperatorKind::FlatMap, op, params, input)
    }

    /// Combines the values of each key of `input` with the reduce `op`: one
    /// record per key, in order of first appearance.
    pub fn reduce(&self, op: &str, params: &Params, input: &Batch) -> Result<Batch, Error> {
        self.one_input(OperatorKind::Reduce, op, params, input)
    }

    /// Runs the transform `op` over the whole partition.
    pub fn transform(&self, op: &str, params: &Params, input: &Batch) -> Result<Batch, Error> {
        self.one_input(OperatorKind::Transform, op, params, input)
    }

    /// The records of `input` the filter `op` keeps. Only their indices cross
    /// back from the guest; the records are copied here.
    pub fn filter(&self, op: &str, params: &Params, input: &Batch) -> Result<Batch, Error> {
        self.check(op, &[OperatorKind::Filter], params)?;
        let pieces = Pieces::of(input)?;
        let mut keep = Vec::new();
        let mut spans = pieces.spans();
        self.invoke_each(
            op,
            &self.exports.filter,
            pieces.iter().map(|p| (op, params, p)),
            |(r,): (Result<Vec<u32>, wit::OpError>,)| {
                let (start, len) = spans.next().expect("one span per piece");
                self.take_kept(op, r, start, len, &mut keep)
            },
        )?;
        input
            .select(&keep)
            .map_err(|e| self.bad_output(op, e.to_string()))
    }

    /// Adds to `keep` the indices a filter call over records `start..start
    /// + len` kept, numbered in the partition. Each index is checked against
    /// its own call (order and the partition's range are checked by
    /// `select`).
    fn take_kept(
        &self,
        op: &str,
        r: Result<Vec<u32>, wit::OpError>,
        start: u32,
        len: u32,
        keep: &mut Vec<u32>,
    ) -> Result<(), Error> {
        let kept = r.map_err(|e| self.op_error(op, in_partition(e, start)))?;
        if let Some(i) = kept.iter().find(|i| **i >= len) {
            return Err(self.bad_output(
                op,
                format!("selection index {i} out of range (a call over {len} records)"),
            ));
        }
        keep.extend(kept.into_iter().map(|i| i + start));
        Ok(())
    }

    /// [`filter`](Self::filter) over a partition whose pages are lent to
    /// the guest rather than copied into it (see [`PagedBatch`]): for each
    /// window of up to 8 MiB of records (less under a small memory limit:
    /// [`Limits::call_input`](crate::Limits::call_input)), the pages move
    /// into a region the guest set aside, copy-on-write, and back out after
    /// the call. The output is the same as `filter`'s, whatever the plugin
    /// does to its input. Where lending is off
    /// ([`Limits::lend_input`](crate::Limits::lend_input)) or the kernel
    /// cannot move pages, and for a plugin built for contract 0.2.0 (no
    /// `lend`) or one with WASI, and while another call has the same
    /// batch's pages, the input is copied, as by `filter`. Linux only.
    ///
    /// [`PagedBatch`]: crate::PagedBatch
    #[cfg(target_os = "linux")]
    pub fn filter_lent(
        &self,
        op: &str,
        params: &Params,
        input: &crate::PagedBatch,
    ) -> Result<Batch, Error> {
        self.check(op, &[OperatorKind::Filter], params)?;
        let mut keep = Vec::new();
        let lent = match self.lending(input).filter(|_| !input.is_empty()) {
            Some(lending) => self.in_instance(op, |call| {
                // Taken once this call has its instance, so a call waiting
                // for a pool slot holds no batch's pages up.
                let Some(mut lender) = input.lender() else {
                    return Ok(false);
                };
                type Kept = (Result<Vec<u32>, wit::OpError>,);
                let filter = call.func::<(u32,), Kept>(&lending.filter_lent)?;
                self.each_lent(call, op, params, lending, &mut lender, |call, w| {
                    let (r,) = call.call(&filter, (w.at as u32,))?;
                    let (first, len) = (w.records.start as u32, w.records.len() as u32);
                    self.take_kept(op, r, first, len, &mut keep)
                })
            })?,
            None => false,
        };
        if !lent {
            return self.filter(op, params, &input.to_batch());
        }
        input
            .select(&keep)
            .map_err(|e| self.bad_output(op, e.to_string()))
    }

    /// The plugin's lending exports, if the limits allow lending
    /// ([`Limits::lend_input`](crate::Limits::lend_input)), the plugin has
    /// them and imports nothing but `log` (no WASI), and `input` can be lent
    /// (a host that can move pages, offsets that fit the contract's u32).
    #[cfg(target_os = "linux")]
    fn lending(&self, input: &crate::PagedBatch) -> Option<&crate::runtime::Lending> {
        // Writes into lent pages are found through the calling thread's
        // page faults; WASI's host functions, and component-model async
        // built-ins, could write into guest memory from another thread or
        // through the kernel, unseen.
        let no_wasi = matches!(self.wasi, Wasi::Refuse);
        let fits = self.limits().lend_input
            && !cfg!(feature = "component-model-async")
            && no_wasi
            && crate::lend::supported()
            && input.data().len() <= u32::MAX as usize / 2;
        self.exports.lending.as_ref().filter(|_| fits)
    }

    /// The error for a malformed result of `op`.
    fn bad_output(&self, op: &str, message: String) -> Error {
        Error::BadOutput {
            plugin: self.name.clone(),
            operator: op.to_string(),
            message,
        }
    }

    /// Asks the guest (`lend`) for a region as big as the largest window of
    /// `input`, then runs `each` once per window with the window's bounds
    /// given (`lent-bounds`) and its pages moved into that region, taking
    /// them back after each call. `Ok(false)` when the kernel refused to
    /// move pages (nothing moved then): the caller copies instead. While
    /// pages are lent only calls whose arguments are numbers run: nothing
    /// but the guest itself, on this thread, writes into its memory.
    #[cfg(target_os = "linux")]
    fn each_lent(
        &self,
        call: &mut Call<'_>,
        op: &str,
        params: &Params,
        lending: &crate::runtime::Lending,
        lender: &mut crate::lend::Lender<'_>,
        mut each: impl FnMut(&mut Call<'_>, &crate::lend::Window) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        use crate::lend::{LEND_ALIGN, LEND_BYTES};
        let input = lender.batch();
        let windows = input.windows(LEND_BYTES.min(self.limits().call_input()));
        let region_len = windows.iter().map(|w| w.pages.len()).max().unwrap_or(0);
        let region_len = region_len.max(LEND_ALIGN);
        let lend = call.func::<(u32, &str, &Params), (Region,)>(&lending.lend)?;
        let bounds_of = call.func::<(&[u32],), ()>(&lending.lent_bounds)?;
        let (region,) = call.call(&lend, (region_len as u32, op, params))?;
        let store = &*call.store();
        // Lifting the lists checked that both lie inside this instance's
        // memory, so the region between them does too.
        let start = region.start.as_le_slice(store).as_ptr() as usize;
        let end = region.end.as_le_slice(store).as_ptr() as usize;
        if end.checked_sub(start) != Some(region_len) || !start.is_multiple_of(LEND_ALIGN) {
            return Err(self.bad_output(
                op,
                format!(
                    "`lend({region_len})` gave a region of {} bytes{}",
                    end.wrapping_sub(start) as isize,
                    if start.is_multiple_of(LEND_ALIGN) {
                        ""
                    } else {
                        ", not aligned to 64 KiB"
                    }
                ),
            ));
        }
        let guest = std::ptr::NonNull::new(start as *mut u8).expect("inside a memory");
        let mut bounds = Vec::new();
        for w in &windows {
            call.check_cancelled()?;
            let b = &input.bounds()[2 * w.records.start..=2 * w.records.end];
            bounds.clear();
            bounds.extend(b.iter().map(|x| x - b[0]));
            call.call(&bounds_of, (&bounds[..],))?;
            // SAFETY: `guest` starts a region of `region_len >= w.pages.len()`
            // bytes inside this instance's memory (checked above) and
            // aligned. Only this instance uses that memory (a guest that
            // lied about the region loses its own data, nothing else); it
            // cannot move (`memory_may_move(false)`) and outlives `lent`,
            // dropped below before the next window; the instance runs on
            // this thread only (synchronous calls, no shared memory).
            let lent = match unsafe { lender.lend(w, guest) } {
                Ok(lent) => lent,
                Err(e) => {
                    tracing::warn!(plugin = %self.name, operator = op, "{e}; copying instead");
                    input.note_copied();
                    return Ok(false);
                }
            };
            let r = each(call, w);
            drop(lent);
            r?;
        }
        Ok(true)
    }

    /// Record `i` of the output is the inverse `op` of `current[i]` and
    /// `leaving[i]`, keyed as `current[i]`.
    pub fn inverse(
        &self,
        op: &str,
        params: &Params,
        current: &Batch,
        leaving: &Batch,
    ) -> Result<Batch, Error> {
        self.check(op, &[OperatorKind::Inverse], params)?;
        let args = (op, params, BatchRef::of(current)?, BatchRef::of(leaving)?);
        let (r,): BatchResult = self.invoke(op, &self.exports.inverse, args)?;
        self.output(op, r)
    }

    /// New state per key from the old `state` (one record per key) and this
    /// interval's `input`; keys whose operator returns no state are dropped.
    pub fn update_state(
        &self,
        op: &str,
        params: &Params,
        input: &Batch,
        state: &Batch,
    ) -> Result<Batch, Error> {
        self.check(op, &[OperatorKind::UpdateState], params)?;
        let args = (op, params, BatchRef::of(input)?, BatchRef::of(state)?);
        let (r,): BatchResult = self.invoke(op, &self.exports.update_state, args)?;
        self.output(op, r)
    }

    /// Runs the one-input operator `op`, whatever its kind.
    pub fn apply(&self, op: &str, params: &Params, input: &Batch) -> Result<Batch, Error> {
        let kind = self.check(op, &OperatorKind::ONE_INPUT, params)?.kind;
        self.one_input(kind, op, params, input)
    }

    /// Runs a chain of one-input operators in one call, inside one instance:
    /// intermediate partitions never leave the sandbox. A chain of map,
    /// flat-map and filter stages runs over the partition's pieces, one
    /// call each, its outputs put one after the other; one of those stages
    /// and then a reduce runs over the pieces through the plugin's `feed`,
    /// the reduce keeping its groups from piece to piece; any other chain
    /// gets the whole partition in one call.
    pub fn pipeline(&self, stages: &[Stage], input: &Batch) -> Result<Batch, Error> {
        let mut kinds = Vec::with_capacity(stages.len());
        for s in stages {
            kinds.push(self.check(&s.op, &OperatorKind::ONE_INPUT, &s.params)?.kind);
        }
        let record_wise = kinds.iter().all(|k| k.is_record_wise());
        let label = stages
            .iter()
            .map(|s| s.op.as_str())
            .collect::<Vec<_>>()
            .join("+");
        if record_wise {
            let pieces = Pieces::of(input)?;
            let args = pieces.iter().map(|p| (stages, p));
            return self.concat_each(&label, &self.exports.pipeline, &pieces, args);
        }
        let fed = match &kinds[..] {
            [init @ .., OperatorKind::Reduce] => {
                !init.is_empty() && init.iter().all(|k| k.is_record_wise())
            }
            _ => false,
        };
        if fed && input.byte_len() > PIECE_BYTES {
            return self.feed(&label, stages, &Pieces::of(input)?);
        }
        let (r,): BatchResult = self.invoke(
            &label,
            &self.exports.pipeline,
            (stages, BatchRef::of(input)?),
        )?;
        self.output(&label, r)
    }

    /// Runs `stages` over `pieces` through the plugin's `feed` resource,
    /// in one instance. Its errors already number records over the whole
    /// partition.
    fn feed(&self, label: &str, stages: &[Stage], pieces: &Pieces<'_>) -> Result<Batch, Error> {
        type Pushed = (Result<(), wit::OpError>,);
        self.in_instance(label, |call| {
            let new = call.func::<(&[Stage],), (ResourceAny,)>(&self.exports.feed_new)?;
            let push = call.func::<(ResourceAny, BatchRef<'_>), Pushed>(&self.exports.feed_push)?;
            let finish = call.func::<(ResourceAny,), BatchResult>(&self.exports.feed_finish)?;
            let (feed,) = call.call(&new, (stages,))?;
            for piece in pieces.iter() {
                call.check_cancelled()?;
                let (r,) = call.call(&push, (feed, piece))?;
                r.map_err(|e| self.op_error(label, e))?;
            }
            let (r,) = call.call(&finish, (feed,))?;
            let out = self.output(label, r)?;
            feed.resource_drop(call.store())
                .map_err(|e| Error::Invalid {
                    plugin: self.name.clone(),
                    message: format!("{e:#}"),
                })?;
            Ok(out)
        })
    }
}
