//! The `vpnsim` command line as a person uses it: `show` and `promote`, their output, their
//! errors and their exit codes.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn vpnsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpnsim"))
        .args(args)
        .output()
        .expect("vpnsim runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory under the system's temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vpnsim-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn corpus_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(format!("{name}.yaml"))
        .display()
        .to_string()
}

#[test]
fn show_prints_a_corpus_story_and_its_prediction() {
    let out = vpnsim(&["show", &corpus_file("tcp-fin")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for expected in [
        "name: tcp-fin\n",
        "# A TCP connection to a CIDR resource, closed by FIN.\n",
        "\ntimeline:\n",
        "  step 3       5.000s  tcp-close: { conn: 1, by: client }\n",
        "  end          7.000s  every gateway shuts down\n",
        "\nflow records (1):\n",
        "  tcp alice -> db: 100.64.0.2:30001 > 198.51.100.20:5432, 2.010s .. 5.032s (last packet 5.032s), tx 6 packets 200 bytes, rx 4 packets 1000 bytes, closed by fin",
        "\ndeliveries (",
        "     5.033s step 3   to the resource behind gw: TCP 100.64.0.2:30001 > 198.51.100.20:5432 [.] seq 1202 ack 6002 len 0\n",
        "\ndrops (1):\n",
        "     6.010s step 4   by gw (client alice): tcp-without-syn: TCP 100.64.0.2:30001 > 198.51.100.20:5432 [.] seq 1202 ack 6002 len 0\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}

#[test]
fn show_fails_clearly_on_bad_input() {
    let dir = temp_dir("show");
    let missing = dir.join("missing.yaml");
    let out = vpnsim(&["show", &missing.display().to_string()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "vpnsim: {}: cannot read the file: ",
            missing.display()
        )),
        "{stderr}"
    );

    let invalid = dir.join("invalid.yaml");
    let story = std::fs::read_to_string(corpus_file("tcp-fin")).expect("read");
    std::fs::write(
        &invalid,
        story.replace("{ conn: 1, by: client }", "{ conn: 2, by: client }"),
    )
    .expect("write");
    let line = 1 + story
        .lines()
        .position(|line| line.contains("tcp-close"))
        .expect("a tcp-close step");
    let out = vpnsim(&["show", &invalid.display().to_string()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "vpnsim: {}:{line}: steps[3]: connection 2 was never opened\n",
            invalid.display()
        )
    );
    assert!(out.stdout.is_empty(), "nothing printed for an invalid file");

    let syntax = dir.join("syntax.yaml");
    std::fs::write(&syntax, "name: x\ntopology: [\n").expect("write");
    let out = vpnsim(&["show", &syntax.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with(&format!("vpnsim: {}:", syntax.display())),
        "{}",
        text(&out.stderr)
    );

    let out = vpnsim(&["show"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing argument is a usage error"
    );
    assert!(
        text(&out.stderr).contains("<FILE>"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn promote_copies_into_the_corpus_and_says_how_to_snapshot() {
    let dir = temp_dir("promote");
    let corpus = dir.join("corpus");
    let corpus_arg = corpus.display().to_string();
    let source = corpus_file("udp-cidr-direct");
    let out = vpnsim(&["promote", &source, "my-story", "--corpus", &corpus_arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("INSTA_UPDATE=unseen cargo test -p scenarios --test corpus"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cargo insta test --accept -p scenarios --test corpus"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(corpus.join("my-story.yaml")).expect("written");
    assert!(written.starts_with(&format!("# Promoted from {source} by `vpnsim promote`.\n")));
    assert!(written.contains("\nname: my-story\n"), "{written}");

    // Once more with the same name: refused, non-zero, the file untouched.
    let out = vpnsim(&["promote", &source, "my-story", "--corpus", &corpus_arg]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("my-story.yaml already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(corpus.join("my-story.yaml")).expect("read"),
        written
    );

    let out = vpnsim(&["promote", &source, "My Story", "--corpus", &corpus_arg]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("`My Story` is not a corpus name"),
        "{}",
        text(&out.stderr)
    );

    let out = vpnsim(&["promote", &source]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing name is a usage error"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `replay` run from the workspace root names every path relative to it: neither what it
/// prints nor any text file it writes contains the absolute path of the directory it ran in.
#[test]
fn replay_prints_and_writes_no_absolute_path_of_where_it_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root");
    let out = Command::new(env!("CARGO_BIN_EXE_vpnsim"))
        .args(["replay", "scenarios/corpus/same-relay-v4.yaml"])
        .current_dir(&root)
        .output()
        .expect("vpnsim runs");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let absolute = root.display().to_string();
    assert!(!stdout.contains(&absolute), "{absolute} in\n{stdout}");
    assert!(!stderr.contains(&absolute), "{absolute} in\n{stderr}");
    let written = stdout
        .lines()
        .find_map(|line| line.strip_prefix("written to "))
        .and_then(|rest| rest.strip_suffix("/:"))
        .expect("the replay says where it wrote");
    let dir = root.join(written);
    let mut texts = 0;
    for entry in std::fs::read_dir(&dir).expect("the written directory") {
        let path = entry.expect("an entry").path();
        let Ok(content) = std::fs::read_to_string(&path) else {
            continue; // hops.pcap
        };
        texts += 1;
        assert!(
            !content.contains(&absolute),
            "{absolute} in {}",
            path.display()
        );
    }
    assert!(
        texts >= 4,
        "scenario, trace, routing and flow log in {}",
        dir.display()
    );
}

/// Every text file under `dir`, recursively, with its content.
fn text_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(text_files(&path));
        } else if let Ok(content) = std::fs::read_to_string(&path) {
            files.push((path, content));
        }
    }
    files
}

fn read_summary(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// The sum of one coverage cell over summaries.
fn cell(summary: &serde_json::Value, section: &str, row: &str, column: usize) -> u64 {
    summary["coverage"]["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .find(|s| s["title"] == section)
        .and_then(|s| {
            s["rows"]
                .as_array()?
                .iter()
                .find(|r| r["label"] == row)
                .and_then(|r| r["counts"][column].as_u64())
        })
        .unwrap_or(0)
}

/// Three real shards of one exploration, each written with `--out`, merge into one summary
/// whose counts and grid cells are the shards' sums; a shard with a failure fails the merge
/// and is listed with its replay command. Run from a directory of its own, nothing printed or
/// written names that directory's absolute path.
#[test]
fn shards_merge_into_one_summary_with_relative_paths() {
    let dir = temp_dir("merge");
    let absolute = dir.canonicalize().expect("canonical").display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vpnsim"))
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("vpnsim runs");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(!stdout.contains(&absolute), "{absolute} in\n{stdout}");
        assert!(!stderr.contains(&absolute), "{absolute} in\n{stderr}");
        (out.status, stdout, stderr)
    };
    let mut shards = Vec::new();
    for k in 1..=3 {
        let out = format!("shard-{k}");
        let (status, stdout, stderr) = run(&[
            "explore",
            "--count",
            "12",
            "--seed",
            "5",
            "--shard",
            &format!("{k}/3"),
            "--determinism",
            "off",
            "--out",
            &out,
        ]);
        assert!(status.success(), "shard {k} failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!(
                "summary: {out}/summary.json, heat map: {out}/coverage.html"
            )),
            "{stdout}"
        );
        shards.push(read_summary(&dir.join(&out).join("summary.json")));
    }
    let (status, stdout, stderr) =
        run(&["merge", "--out", "merged", "shard-1", "shard-2", "shard-3"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("shards                      1/3 2/3 3/3"),
        "{stdout}"
    );
    let merged = read_summary(&dir.join("merged/summary.json"));
    assert_eq!(merged["runs"].as_array().map(Vec::len), Some(3));
    for field in [
        "cases",
        "checked",
        "skipped",
        "steps",
        "datagrams",
        "flow_records",
    ] {
        let sum: u64 = shards.iter().map(|s| s[field].as_u64().expect(field)).sum();
        assert_eq!(merged[field].as_u64(), Some(sum), "{field}");
    }
    assert_eq!(merged["cases"].as_u64(), Some(36));
    for (section, row, column) in [
        ("XDP rewrites (runs)", "channel -> udp", 0),
        ("scenarios", "both peers on one relay", 0),
        ("TCP segments by flow state", "open", 4),
        ("flow records", "closed by shutdown", 0),
    ] {
        let sum: u64 = shards.iter().map(|s| cell(s, section, row, column)).sum();
        assert_eq!(
            cell(&merged, section, row, column),
            sum,
            "{section} / {row}"
        );
    }
    assert!(
        cell(&merged, "flow records", "compared", 0) > 0,
        "the shards compared flow records"
    );
    let html = std::fs::read_to_string(dir.join("merged/coverage.html")).expect("heat map");
    assert!(html.contains("<table id=\"runs\">"), "{html}");

    // A shard that found a failure: the merge lists it, says how to replay it, and fails.
    let failed = dir.join("shard-failed");
    std::fs::create_dir_all(failed.join("failures/failure-0")).expect("dir");
    let mut summary = shards[0].clone();
    summary["runs"][0]["failed"] = true.into();
    summary["failures"] = serde_json::json!([{
        "exploration_seed": 5, "shard": "1/3", "case_seed": 77, "profile": "everything",
        "error": "flow records differ", "steps_generated": 9, "steps_shrunk": 2,
        "simplifications": 4, "dir": "failures/failure-0",
        "replay": "cargo xtask replay shard-failed/failures/failure-0/scenario.yaml",
        "replay_case": "cargo xtask replay --case 77"
    }]);
    std::fs::write(failed.join("summary.json"), summary.to_string()).expect("write");
    let (status, stdout, stderr) = run(&[
        "merge",
        "--out",
        "merged-2",
        "shard-2",
        "shard-failed/summary.json",
    ]);
    assert!(!status.success(), "{stdout}");
    assert!(stderr.contains("1 of 2 runs found a failure"), "{stderr}");
    assert!(
        stdout.contains("replay: cargo xtask replay shard-failed/failures/failure-0/scenario.yaml"),
        "{stdout}"
    );
    let merged = read_summary(&dir.join("merged-2/summary.json"));
    assert_eq!(
        merged["failures"][0]["dir"],
        "../shard-failed/failures/failure-0"
    );

    // Not a summary: a clear error.
    let (status, _, stderr) = run(&["merge", "shard-1/coverage.html"]);
    assert!(!status.success());
    assert!(
        stderr.contains("shard-1/coverage.html: not an exploration summary"),
        "{stderr}"
    );

    for (path, content) in text_files(&dir) {
        assert!(
            !content.contains(&absolute),
            "{absolute} in {}",
            path.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
