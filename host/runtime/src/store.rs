//! The in-memory block store: every partition a batch computes, until the
//! retention policy of the core says no later batch needs it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use dstream_core::exec::Block;
use dstream_core::plan::{BlockId, DatasetId};

/// Blocks by id. Blocks are immutable once stored; readers share them.
#[derive(Debug, Default)]
pub struct BlockStore {
    blocks: RwLock<HashMap<BlockId, Arc<Block>>>,
}

impl BlockStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a block (replacing one with the same id: a recomputed block
    /// has the same bytes).
    pub fn insert(&self, id: BlockId, block: Arc<Block>) {
        self.blocks.write().expect("store lock").insert(id, block);
    }

    /// The block, if stored.
    pub fn get(&self, id: &BlockId) -> Option<Arc<Block>> {
        self.blocks.read().expect("store lock").get(id).cloned()
    }

    /// Removes blocks (absent ones are ignored).
    pub fn remove(&self, ids: &[BlockId]) {
        let mut g = self.blocks.write().expect("store lock");
        for id in ids {
            g.remove(id);
        }
    }

    /// Keeps only blocks of datasets in `keep` or of batches after `batch`.
    pub fn retain(&self, batch: u64, keep: &BTreeSet<DatasetId>) {
        self.blocks
            .write()
            .expect("store lock")
            .retain(|id, _| id.dataset.batch > batch || keep.contains(&id.dataset));
    }

    /// The blocks of `dataset`, by partition (missing ones absent).
    pub fn dataset(&self, dataset: &DatasetId) -> Vec<(u32, Arc<Block>)> {
        let mut v: Vec<(u32, Arc<Block>)> = self
            .blocks
            .read()
            .expect("store lock")
            .iter()
            .filter(|(id, _)| id.dataset == *dataset)
            .map(|(id, b)| (id.part, b.clone()))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// Number of blocks and bytes held.
    pub fn size(&self) -> (usize, usize) {
        let g = self.blocks.read().expect("store lock");
        (g.len(), g.values().map(|b| b.bytes()).sum())
    }
}
