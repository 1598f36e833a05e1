//! The `dstream` binary, run as a user would, on real components.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn dstream(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dstream"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

const TEXT: &str = "the quick brown fox\njumps over the lazy dog\n\nthe end\n";

#[test]
fn inspect_lists_operators_kinds_params_and_encodings() {
    let out = stdout(&dstream(
        &["plugin", "inspect", dstream_artifacts::WORDCOUNT],
        None,
    ));
    assert!(out.starts_with("wordcount 0.1.0"), "{out}");
    assert!(
        out.contains(&format!(
            "a valid dstream:plugin@{} component",
            dstream_wasm::WIT_VERSION
        )),
        "{out}"
    );
    let ops: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.contains(") -> ("))
        .map(|l| l.split_whitespace().take(2).collect())
        .collect();
    assert_eq!(
        ops,
        [
            ["split", "flat-map"],
            ["sum", "reduce"],
            ["subtract", "inverse"],
            ["top", "transform"]
        ]
    );
    assert!(out.contains("(none, utf8) -> (utf8, u64)"), "{out}");
    assert!(
        out.contains("param n (optional): How many words to keep."),
        "{out}"
    );
    let grep = stdout(&dstream(
        &["plugin", "inspect", dstream_artifacts::GREP],
        None,
    ));
    assert!(
        grep.contains("param pattern: the bytes a line must contain"),
        "{grep}"
    );
}

#[test]
fn test_op_runs_a_chain_and_matches_a_plain_count() {
    let out = stdout(&dstream(
        &[
            "test-op",
            dstream_artifacts::WORDCOUNT,
            "split+sum",
            "--input",
            "-",
        ],
        Some(TEXT),
    ));
    let got: Vec<(String, u64)> = out
        .lines()
        .map(|l| {
            let (w, n) = l.split_once('\t').unwrap();
            (w.to_string(), n.parse().unwrap())
        })
        .collect();
    let mut expected: Vec<(String, u64)> = Vec::new();
    for w in TEXT.split_ascii_whitespace() {
        match expected.iter_mut().find(|(x, _)| x == w) {
            Some((_, n)) => *n += 1,
            None => expected.push((w.to_string(), 1)),
        }
    }
    assert_eq!(got, expected);
}

#[test]
fn test_op_filters_with_a_parameter() {
    let out = stdout(&dstream(
        &[
            "test-op",
            dstream_artifacts::GREP,
            "grep",
            "-i",
            "-",
            "--param",
            "pattern=the",
        ],
        Some(TEXT),
    ));
    let expected: Vec<&str> = TEXT.lines().filter(|l| l.contains("the")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn test_op_parses_typed_keyed_input_and_state() {
    // reduce reads KEY<TAB>u64 lines.
    let out = stdout(&dstream(
        &["test-op", dstream_artifacts::PAGEVIEWS, "merge", "-i", "-"],
        Some("/a\t2\n/b\t5\n/a\t40\n"),
    ));
    assert_eq!(out, "/a\t42\n/b\t5\n");
    // update-state over two "intervals": the state printed by the first run
    // is not text (postcard), so run one interval from empty state.
    let out = stdout(&dstream(
        &["test-op", dstream_artifacts::TOPK, "parse", "-i", "-"],
        Some("g x 3\n"),
    ));
    assert_eq!(out, "g\t0x017803\n");
    let dir = std::env::temp_dir().join(format!("dstream-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let leaving = dir.join("leaving.txt");
    std::fs::write(&leaving, "/a\t2\n/b\t5\n").unwrap();
    let out = stdout(&dstream(
        &[
            "test-op",
            dstream_artifacts::PAGEVIEWS,
            "unmerge",
            "-i",
            "-",
            "--leaving",
            leaving.to_str().unwrap(),
        ],
        Some("/a\t10\n/b\t5\n"),
    ));
    assert_eq!(out, "/a\t8\n/b\t0\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_gives_clear_errors_and_exit_code_1() {
    let cases: BTreeMap<&str, (Vec<&str>, &str)> = BTreeMap::from([
        (
            "unknown operator",
            (
                vec!["test-op", dstream_artifacts::WORDCOUNT, "nope", "-i", "-"],
                "error: plugin `wordcount` has no operator `nope` (it has: split, sum, subtract, top)",
            ),
        ),
        (
            "missing parameter",
            (
                vec!["test-op", dstream_artifacts::GREP, "grep", "-i", "-"],
                "error: operator `grep/grep` needs parameter `pattern`",
            ),
        ),
        (
            "keys needed",
            (
                vec!["test-op", dstream_artifacts::PAGEVIEWS, "merge", "-i", "-"],
                "error: -:1: expected KEY<TAB>VALUE, because `merge` reads keys (bytes)",
            ),
        ),
        (
            "leaving needed",
            (
                vec![
                    "test-op",
                    dstream_artifacts::PAGEVIEWS,
                    "unmerge",
                    "-i",
                    "-",
                ],
                "error: `unmerge` is an inverse: give the leaving records with --leaving FILE",
            ),
        ),
        (
            "guest error",
            (
                vec![
                    "test-op",
                    dstream_artifacts::PAGEVIEWS,
                    "url_one",
                    "-i",
                    "-",
                ],
                "error: operator `pageviews/url_one` failed at record 2: empty line",
            ),
        ),
        (
            "missing file",
            (
                vec!["plugin", "inspect", "/nonexistent/x.wasm"],
                "error: reading /nonexistent/x.wasm",
            ),
        ),
    ]);
    for (what, (args, want)) in cases {
        let o = dstream(&args, Some(TEXT));
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{what}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{what}: printed records on failure");
    }
    let o = dstream(
        &["test-op", dstream_artifacts::PAGEVIEWS, "merge", "-i", "-"],
        Some("/a\t1\n/b\tten\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: -:2: value: \"ten\" is not a u64"),
        "{}",
        stderr(&o)
    );
    // Usage errors are clap's exit code 2.
    let o = dstream(&["test-op", dstream_artifacts::GREP], None);
    assert_eq!(o.status.code(), Some(2));
}
