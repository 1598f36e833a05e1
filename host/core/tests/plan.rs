//! Batch plans, lineage and retention, decided without any I/O.

use std::collections::BTreeMap;

use dstream_core::job::{Job, JobFile};
use dstream_core::plan::{Aux, DatasetId, Planner, Work};
use dstream_core::{Encoding, OperatorInfo, OperatorKind, PluginInfo};

fn job(body: &str) -> Job {
    let u = Encoding::Utf8;
    let n = Encoding::U64;
    let op = |name: &str, kind, input, output| {
        OperatorInfo::new(name, kind, (Encoding::None, input), output)
    };
    let plugins = BTreeMap::from([(
        "wc".to_string(),
        PluginInfo {
            name: "wordcount".into(),
            version: "0".into(),
            operators: vec![
                op("split", OperatorKind::FlatMap, u, (u, n)),
                op("sum", OperatorKind::Reduce, n, (u, n)),
                op("subtract", OperatorKind::Inverse, n, (u, n)),
                op("keep", OperatorKind::Filter, u, (Encoding::None, u)),
            ],
        },
    )]);
    let text = format!(
        "name = \"t\"\ninterval = \"1s\"\npartitions = 3\ncheckpoint_interval = \"4s\"\n[plugins]\nwc = \"x\"\n[sources.lines]\nkind = \"generator\"\nrate = 10\n{body}"
    );
    JobFile::parse(&text).unwrap().resolve(&plugins).unwrap()
}

#[test]
fn narrow_chains_fuse_into_the_map_side_of_the_shuffle() {
    let job = job(
        "[streams.kept]\nfrom = \"lines\"\nfilter = \"wc/keep\"\n[streams.words]\nfrom = \"kept\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nrunning_reduce = \"wc/sum\"\n",
    );
    let planner = Planner::new(&job);
    let id = |n: &str| job.node_by_name(n).unwrap();
    assert!(planner.is_fused(id("kept")) && planner.is_fused(id("words")));
    let plan = planner.plan(1);
    assert_eq!(plan.stages.len(), 3, "{plan:#?}");
    let map_side = &plan.stages[1][0];
    assert_eq!(
        map_side.work,
        Work::ShuffleMap {
            chain: vec![id("kept"), id("words")],
            consumer: id("counts"),
            side: 0
        }
    );
    // The reduce side reads bucket p of every map-side block; at batch 1
    // there is no previous state.
    let reduce = &plan.stages[2][1];
    assert_eq!(reduce.inputs.len(), 3);
    assert!(reduce.inputs.iter().all(|i| i.bucket == Some(1)));
    // From batch 2 on, state of the batch before is read too: lineage.
    let plan2 = planner.plan(2);
    let reads: Vec<DatasetId> = plan2
        .reads_from_earlier()
        .into_iter()
        .map(|b| b.dataset)
        .collect();
    assert_eq!(
        reads,
        vec![
            DatasetId {
                node: id("counts"),
                batch: 1,
                aux: Aux::Main
            };
            3
        ]
    );
}

#[test]
fn retention_keeps_state_and_window_contents_only() {
    let job = job(
        "[streams.words]\nfrom = \"lines\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nrunning_reduce = \"sum\"\n[streams.win]\nfrom = \"words\"\nreduce_by_key_and_window = { reduce = \"wc/sum\", inverse = \"wc/subtract\", length = \"3s\", slide = \"1s\" }\n[streams.plain]\nfrom = \"words\"\nwindow = { length = \"2s\", slide = \"2s\" }\n",
    );
    let planner = Planner::new(&job);
    let id = |n: &str| job.node_by_name(n).unwrap();
    let kept = planner.needed_after(10);
    let ds = |n: &str, batch, aux| DatasetId {
        node: id(n),
        batch,
        aux,
    };
    let want = [
        ds("words", 10, Aux::Main), // not kept: the plain window at 12 reads 11 and 12
        ds("counts", 10, Aux::Main), // state
        ds("win", 8, Aux::Slice),   // leaves at 11
        ds("win", 9, Aux::Slice),   // leaves at 12
        ds("win", 10, Aux::Slice),  // leaves at 13
        ds("win", 10, Aux::WindowState), // the previous value at 11
    ];
    for w in &want[1..] {
        assert!(kept.contains(w), "{w:?} not kept: {kept:?}");
    }
    // A 2-batch window sliding every 2 computed at 12 reads 11 and 12 only.
    assert!(!kept.contains(&want[0]), "{kept:?}");
    assert_eq!(kept.len(), 5, "{kept:?}");
    // At batch 11 the plain window (due at 12) needs batch 11 of words.
    assert!(
        planner
            .needed_after(11)
            .contains(&ds("words", 11, Aux::Main))
    );
}

#[test]
fn windows_compute_only_where_they_slide_and_streams_below_follow() {
    let job = job(
        "[streams.words]\nfrom = \"lines\"\nflat_map = \"wc/split\"\n[streams.win]\nfrom = \"words\"\nreduce_by_key_and_window = { reduce = \"sum\", length = \"4s\", slide = \"2s\" }\n[streams.again]\nfrom = \"win\"\nreduce_by_key = \"sum\"\n",
    );
    let planner = Planner::new(&job);
    let id = |n: &str| job.node_by_name(n).unwrap();
    assert_eq!(job.node(id("again")).slide, 2);
    let outputs = |b: u64| -> Vec<(String, Aux)> {
        planner
            .plan(b)
            .tasks()
            .filter(|t| t.output.part == 0)
            .map(|t| {
                (
                    job.node(t.output.dataset.node).name.clone(),
                    t.output.dataset.aux,
                )
            })
            .collect()
    };
    let odd = outputs(3);
    assert!(odd.contains(&("win".into(), Aux::Slice)));
    assert!(
        !odd.iter()
            .any(|(n, a)| n == "again" || *a == Aux::WindowState)
    );
    let even = outputs(4);
    assert!(even.contains(&("win".into(), Aux::WindowState)));
    assert!(even.contains(&("again".into(), Aux::Main)));
    // Without an inverse the value at 4 reads the slices of 1..=4.
    let plan = planner.plan(4);
    let value = plan
        .tasks()
        .find(|t| t.output.dataset.aux == Aux::WindowState)
        .unwrap();
    let batches: Vec<u64> = value.inputs.iter().map(|i| i.block.dataset.batch).collect();
    assert_eq!(batches, [1, 2, 3, 4]);
    // Every task reads only what earlier stages (or batches) made.
    let mut made = std::collections::BTreeSet::new();
    for stage in &plan.stages {
        for t in stage {
            for i in &t.inputs {
                assert!(
                    i.block.dataset.batch < 4 || made.contains(&i.block),
                    "{} reads {} before it exists",
                    t.output,
                    i.block
                );
            }
        }
        made.extend(stage.iter().map(|t| t.output));
    }
}

#[test]
fn checkpoints_fall_every_k_batches() {
    let job = job("[streams.c]\nfrom = \"lines\"\ncount_by_key = true\n");
    assert_eq!(job.checkpoint_every, 4);
    let due: Vec<u64> = (1..=12).filter(|n| job.checkpoint_due(*n)).collect();
    assert_eq!(due, [4, 8, 12]);
}
