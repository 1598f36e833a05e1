//! Plugin calls of the core's executor, through the Wasm sandbox.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use dstream_core::Batch;
use dstream_core::exec::{CallError, Calls};
use dstream_core::job::PluginOp;
use dstream_wasm::{Plugin, Stage};

/// Plugin calls through the Wasm sandbox.
#[derive(Debug)]
pub(crate) struct WasmCalls<'a> {
    pub(crate) plugins: &'a BTreeMap<String, Plugin>,
    pub(crate) calls: &'a AtomicUsize,
}

impl WasmCalls<'_> {
    fn plugin(&self, op: &PluginOp) -> Result<&Plugin, CallError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.plugins
            .get(&op.plugin)
            .ok_or_else(|| format!("plugin `{}` is not loaded", op.plugin).into())
    }
}

impl Calls for WasmCalls<'_> {
    fn one_input(&self, ops: &[&PluginOp], input: &Batch) -> Result<Batch, CallError> {
        let plugin = self.plugin(ops[0])?;
        Ok(match ops {
            [op] => plugin.apply(&op.op, &op.params, input)?,
            _ => {
                let stages: Vec<Stage> = ops
                    .iter()
                    .map(|o| Stage {
                        op: o.op.clone(),
                        params: o.params.clone(),
                    })
                    .collect();
                plugin.pipeline(&stages, input)?
            }
        })
    }

    fn one_input_from(
        &self,
        ops: &[&PluginOp],
        input: &Batch,
        first: usize,
    ) -> Result<Batch, CallError> {
        self.one_input(ops, input)
            .map_err(|e| match e.downcast::<dstream_wasm::Error>() {
                Ok(e) => match *e {
                    dstream_wasm::Error::Operator {
                        plugin,
                        operator,
                        record,
                        message,
                    } => Box::new(dstream_wasm::Error::Operator {
                        plugin,
                        operator,
                        record: record.map(|r| r.saturating_add(first as u32)),
                        message,
                    }),
                    other => Box::new(other) as CallError,
                },
                Err(e) => e,
            })
    }

    fn update_state(
        &self,
        op: &PluginOp,
        input: &Batch,
        state: &Batch,
    ) -> Result<Batch, CallError> {
        Ok(self
            .plugin(op)?
            .update_state(&op.op, &op.params, input, state)?)
    }

    fn inverse(&self, op: &PluginOp, current: &Batch, leaving: &Batch) -> Result<Batch, CallError> {
        Ok(self
            .plugin(op)?
            .inverse(&op.op, &op.params, current, leaving)?)
    }

    fn max_input_bytes(&self, op: &PluginOp) -> usize {
        self.plugins
            .get(&op.plugin)
            .map_or(usize::MAX, |p| p.limits().call_input())
    }
}
