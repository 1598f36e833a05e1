//! The cluster as a user runs it: a coordinator and worker processes on
//! loopback, talking QUIC with mutual TLS; jobs submitted with the CLI.

mod common;

use std::time::{Duration, Instant};

use common::{
    Cluster, dstream, files, job_file, pageviews, post_when_listening, run_embedded, wordcount,
};

const BATCHES: u64 = 8;

#[test]
fn three_workers_give_the_embedded_output_and_shuffle_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    for (name, body) in [("wordcount", wordcount()), ("pageviews", pageviews())] {
        // The cluster run.
        let job = job_file(dir.path(), name, &body, "cluster");
        let stderr = cluster.submit_and_wait(&job, BATCHES);
        assert!(stderr.contains("finished"), "{stderr}");
        // The embedded run of the same job.
        let job = job_file(dir.path(), name, &body, "embedded");
        let e = run_embedded(dir.path(), &job, BATCHES, "embedded");
        let c = files(&dir.path().join("cluster"));
        assert_eq!(c.len() as u64, BATCHES, "{name}: one file per batch");
        assert!(c.iter().all(|(_, bytes)| !bytes.is_empty()));
        assert!(
            c == e,
            "{name}: the cluster's output differs from the embedded run's"
        );
        std::fs::remove_dir_all(dir.path().join("cluster")).unwrap();
        std::fs::remove_dir_all(dir.path().join("embedded")).unwrap();
    }
    // Shuffle data crossed between workers: some task inputs were fetched
    // from another worker (and served by one), reported with heartbeats.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let w = cluster.workers_status();
        assert_eq!(w.len(), 3, "{w:?}");
        let fetched: u64 = w.iter().map(|r| r.fetched).sum();
        let served: u64 = w.iter().map(|r| r.served).sum();
        let busy = w.iter().filter(|r| r.tasks > 0).count();
        if fetched > 0 && served >= fetched && busy >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no block crossed between workers: {w:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = cluster.coordinator.log();
    assert!(log.contains("job 2 finished after 8 batches"), "{log}");
}

#[test]
fn a_worker_of_another_ca_is_refused_and_a_bad_frame_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 1);
    // Another cluster's CA and certificates.
    let theirs = dir.path().join("theirs");
    let out = dstream()
        .args(["cluster", "init"])
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut intruder = cluster.worker(&theirs, "worker-1");
    let status = intruder.child.wait().unwrap();
    assert!(!status.success(), "a worker of another CA ran");
    cluster.coordinator.wait_for("refused a peer");
    // A certificate of our CA, but garbage on the wire: that connection is
    // closed and the error logged; the coordinator goes on.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use dstream_runtime::net::{self, tls};
        let id = tls::Identity::load(&cluster.certs, "admin").unwrap();
        let ep = net::client(&id).unwrap();
        let conn = net::connect(&ep, cluster.addr.parse().unwrap())
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let version = dstream_core::wire::VERSION.to_le_bytes();
        send.write_all(&[9, 0, 0, 0, version[0], version[1], 0xff, 0xff])
            .await
            .unwrap();
        send.finish().unwrap();
        assert!(net::read(&mut recv).await.is_err());
        let reason = conn.closed().await.to_string();
        assert!(reason.contains("ended inside a frame"), "{reason}");
    });
    cluster
        .coordinator
        .wait_for("bad request; closing the connection");
    // A bad job file is refused with its line and field.
    let job = dir.path().join("bad.toml");
    std::fs::write(
        &job,
        "name = \"bad\"\ninterval = \"1s\"\n[sources.s]\nkind = \"pigeon\"\n",
    )
    .unwrap();
    let out = cluster.cli(&["submit", job.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.toml:4:8: sources.s.kind"), "{stderr}");
    // Its worker is still there, and the CLI is still answered.
    let w = cluster.workers_status();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].name, "worker-1");
    drop(intruder);
}

#[test]
fn received_lines_are_counted_once_and_copied_to_a_second_worker() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    // The source: a server the receiver connects to, as in the paper's
    // socket example. Lines of words, all sent at once.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut words = 0u64;
    let mut text = String::new();
    for i in 0..5000u64 {
        let line = format!("w{} w{} w{}\n", i % 17, i % 5, i % 101);
        words += 3;
        text.push_str(&line);
    }
    let feeder = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.write_all(text.as_bytes()).unwrap();
        s.flush().unwrap();
        // Keep the connection open until the job ends.
        std::thread::sleep(Duration::from_secs(5));
    });
    let body = format!(
        "[plugins]\nwc = \"{}\"\n[sources.lines]\nkind = \"tcp\"\naddr = \"{addr}\"\n[streams.words]\nfrom = \"lines\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nreduce_by_key = \"sum\"\n",
        dstream_artifacts::WORDCOUNT
    );
    let job = job_file(dir.path(), "tcp", &body, "out");
    cluster.submit_and_wait(&job, 12);
    // Every word counted once over all batches.
    let mut total = 0u64;
    for (_, bytes) in files(&dir.path().join("out")) {
        for line in String::from_utf8(bytes).unwrap().lines() {
            let (_, n) = line.rsplit_once('\t').unwrap();
            total += n.parse::<u64>().unwrap();
        }
    }
    assert_eq!(total, words);
    // The input blocks were received on one worker and copied to another.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let w = cluster.workers_status();
        let receivers = w.iter().filter(|r| r.received > 0).count();
        let copies = w.iter().filter(|r| r.replicas > 0).count();
        if receivers == 1 && copies == 1 {
            let r = w.iter().find(|r| r.received > 0).unwrap();
            let c = w.iter().find(|r| r.replicas > 0).unwrap();
            assert_ne!(r.name, c.name);
            // Every block copied (once both heartbeats are in).
            if r.received == c.replicas {
                break;
            }
        }
        assert!(Instant::now() < deadline, "{w:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    feeder.join().unwrap();
}

#[test]
fn posted_lines_are_answered_once_stored_and_copied() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    // A free port for the source (all workers share this host).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut text = String::new();
    for i in 0..300u64 {
        text.push_str(&format!("p{} q{}\n", i % 7, i % 3));
    }
    let poster =
        std::thread::spawn(move || post_when_listening(addr, &text, Duration::from_secs(30)));
    let body = format!(
        "[plugins]\nwc = \"{}\"\n[sources.posted]\nkind = \"http\"\nlisten = \"{addr}\"\n[streams.words]\nfrom = \"posted\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nreduce_by_key = \"sum\"\n",
        dstream_artifacts::WORDCOUNT
    );
    let job = job_file(dir.path(), "http", &body, "out");
    cluster.submit_and_wait(&job, 25);
    // Answered 200 (not 202): the worker confirmed the lines once it had
    // stored them and copied them to a second worker.
    let answer = poster.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("accepted 300 records\n"), "{answer}");
    // And every posted word was counted once.
    let mut total = 0u64;
    for (_, bytes) in files(&dir.path().join("out")) {
        for line in String::from_utf8(bytes).unwrap().lines() {
            let (_, n) = line.rsplit_once('\t').unwrap();
            total += n.parse::<u64>().unwrap();
        }
    }
    assert_eq!(total, 600);
}
