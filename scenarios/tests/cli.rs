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
