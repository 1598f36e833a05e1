//! Faults on a real cluster: worker processes killed with SIGKILL while a
//! running count goes on; the output must be the failure-free run's.

mod common;

use std::time::Duration;

use common::{Cluster, Proc, dstream, files, job_file, pageviews, run_embedded};
use dstream_core::generate::SplitMix64;

const BATCHES: u64 = 12;

/// `DSTREAM_KILL_RUNS` runs (20 by default; a longer command runs
/// hundreds): each submits the running page-view count, SIGKILLs a worker
/// picked at random at a random moment (while the job loads or runs), starts
/// a fresh worker in its place, and checks the files the job wrote against
/// the embedded run's: same batches, same bytes, none missing or doubled.
#[test]
fn a_worker_killed_at_a_random_moment_changes_nothing_in_the_output() {
    let runs: u64 = std::env::var("DSTREAM_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("DSTREAM_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(42);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with(dir.path(), 3, &["--heartbeat-timeout", "1s"]);
    let body = pageviews();
    // The failure-free output, from the embedded engine.
    let job = job_file(dir.path(), "pv", &body, "embedded");
    let expected = run_embedded(dir.path(), &job, BATCHES, "embedded");
    assert_eq!(expected.len() as u64, BATCHES);
    let mut rng = SplitMix64::new(seed);
    for run in 0..runs {
        let out_dir = format!("run{run}");
        let job = job_file(dir.path(), "pv", &body, &out_dir);
        let submit = Proc::spawn(
            dstream()
                .args(["submit", job.to_str().unwrap(), "--wait", "--batches"])
                .arg(BATCHES.to_string())
                .args(["--coordinator", &cluster.addr, "--certs"])
                .arg(&cluster.certs),
        );
        let wait = Duration::from_millis(300 + rng.below(2700));
        let victim = rng.below(cluster.workers.len() as u64) as usize;
        std::thread::sleep(wait);
        let killed = &mut cluster.workers[victim];
        killed.child.kill().unwrap(); // SIGKILL
        killed.child.wait().unwrap();
        let fresh = cluster.worker(&cluster.certs.clone(), &format!("worker-{}", 1 + victim));
        fresh.wait_for("joined the coordinator");
        cluster.workers[victim] = fresh;
        let mut submit = submit;
        let status = submit.child.wait().unwrap();
        let context = format!(
            "run {run} (seed {seed}): worker {victim} killed {} ms after submitting\nsubmit:\n{}\ncoordinator:\n{}",
            wait.as_millis(),
            submit.log(),
            cluster.coordinator.log()
        );
        assert!(status.success(), "{context}");
        let got = files(&dir.path().join(&out_dir));
        assert_eq!(
            got.iter().map(|f| &f.0).collect::<Vec<_>>(),
            expected.iter().map(|f| &f.0).collect::<Vec<_>>(),
            "{context}"
        );
        assert!(got == expected, "run {run}: output differs\n{context}");
    }
    // Every kill was noticed, and some hit a running job whose lost blocks
    // were rebuilt from lineage.
    // (A kill at the very end of a job is noticed after it, within the
    // heartbeat timeout.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (cluster.coordinator.log().matches(" lost: ").count() as u64) < runs {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            cluster.coordinator.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = cluster.coordinator.log();
    assert_eq!(log.matches(" lost: ").count() as u64, runs, "{log}");
    let recomputed = cluster.job_counter("recomputed");
    assert!(
        runs < 5 || recomputed > 0,
        "no task recomputed in {runs} runs"
    );
}

#[test]
fn a_worker_slowed_ten_times_gets_its_tasks_copied_and_the_output_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(dir.path(), 2, &["--speculation-min", "2ms"]);
    let slow = cluster.worker_with(&cluster.certs, "worker-1", &["--fault-slow", "10"]);
    slow.wait_for("joined the coordinator");
    let body = pageviews();
    let job = job_file(dir.path(), "pv", &body, "embedded");
    let expected = run_embedded(dir.path(), &job, BATCHES, "embedded");
    let job = job_file(dir.path(), "pv", &body, "cluster");
    cluster.submit_and_wait(&job, BATCHES);
    assert!(files(&dir.path().join("cluster")) == expected);
    let speculated = cluster.job_counter("speculated");
    assert!(speculated > 0, "{}", cluster.coordinator.log());
    drop(slow);
}

#[test]
fn a_coordinator_killed_and_restarted_resumes_every_job_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // A fixed address, so that the restarted coordinator is where the
    // workers look for it.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--listen", listen.as_str(), "--heartbeat-timeout", "2s"];
    let mut cluster = Cluster::start_with(dir.path(), 3, &args);
    let batches = 20u64;
    let with_checkpoints = |out: &str| {
        let job = job_file(dir.path(), "pv", &pageviews(), out);
        let text = std::fs::read_to_string(&job).unwrap().replacen(
            "partitions = 4\n",
            "partitions = 4\ncheckpoint_interval = \"800ms\"\n",
            1,
        );
        std::fs::write(&job, text).unwrap();
        job
    };
    let job = with_checkpoints("embedded");
    let expected = run_embedded(dir.path(), &job, batches, "embedded");
    let job = with_checkpoints("cluster");
    let out = cluster.cli(&[
        "submit",
        job.to_str().unwrap(),
        "--batches",
        &batches.to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    // Wait for a checkpoint (every 4 batches), then SIGKILL the
    // coordinator.
    let ckpts = dir.path().join("state/checkpoints/job-1");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&ckpts).is_ok_and(|mut d| {
        d.any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoint-")
        })
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            cluster.coordinator.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    cluster.coordinator.child.kill().unwrap();
    cluster.coordinator.child.wait().unwrap();
    let before = files(&dir.path().join("cluster")).len() as u64;
    assert!(before < batches, "the job ended before the kill");
    // The same coordinator again: it resumes the job from its checkpoint,
    // the workers join it again.
    cluster.coordinator = Proc::spawn(dstream().args(Cluster::coordinator_args(dir.path(), &args)));
    cluster.coordinator.wait_for("resumed");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out = cluster.cli(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("finished") {
            break;
        }
        assert!(
            !text.contains("failed") && std::time::Instant::now() < deadline,
            "{text}\n{}",
            cluster.coordinator.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Totals right: every batch's file is the failure-free run's.
    assert!(
        files(&dir.path().join("cluster")) == expected,
        "{}",
        cluster.coordinator.log()
    );
    let log = cluster.coordinator.log();
    assert_eq!(log.matches("joined (blocks served").count(), 3, "{log}");
}
