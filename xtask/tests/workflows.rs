//! The CI workflows (`.github/workflows/*.yml`) pass actionlint, shellcheck on their `run:`
//! scripts included, so a broken workflow fails our own CI before it reaches GitHub. And
//! actionlint, as installed here, does find errors: a broken workflow must be reported.
//!
//! `cargo xtask test` installs actionlint and shellcheck into `target/tools/venv`
//! (`setup::ensure_workflow_lint`). Without them the test skips loudly, or fails under
//! `CI=true`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// `program` where `cargo xtask test` installs it (`setup::WORKFLOW_LINT_VENV`), else on
/// PATH; only if it runs.
fn find(program: &str) -> Option<PathBuf> {
    let installed = std::iter::once(root().join("target/tools/venv/bin").join(program));
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    installed.chain(on_path).find(|candidate| {
        Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// actionlint and the shellcheck it is to run, or a loud skip (a failure under CI).
fn tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    let actionlint = find("actionlint");
    let shellcheck = find("shellcheck");
    if let (Some(actionlint), Some(shellcheck)) = (&actionlint, &shellcheck) {
        return Some((actionlint.clone(), shellcheck.clone()));
    }
    let missing = [("actionlint", &actionlint), ("shellcheck", &shellcheck)]
        .iter()
        .filter(|(_, found)| found.is_none())
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" and ");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {missing} not found (in target/tools/venv/bin or on PATH), and CI requires \
         this test; `cargo xtask test` installs them"
    );
    // Straight to the stderr handle: the harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED {test}: {missing} not found (in target/tools/venv/bin or on PATH); \
         `cargo xtask test` installs them. Set CI=true to make this a failure.\n"
    );
    None
}

/// actionlint on `files`, with shellcheck on every `run:` script.
fn actionlint(actionlint: &Path, shellcheck: &Path, files: &[PathBuf]) -> Output {
    Command::new(actionlint)
        .arg("-no-color")
        .arg(format!("-shellcheck={}", shellcheck.display()))
        .args(files)
        .current_dir(root())
        .output()
        .expect("actionlint runs")
}

fn workflow_files() -> Vec<PathBuf> {
    let dir = root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yml" || extension == "yaml")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_workflows_pass_actionlint_and_shellcheck() {
    let files = workflow_files();
    let names: Vec<String> = files
        .iter()
        .filter_map(|file| Some(file.file_name()?.to_string_lossy().into_owned()))
        .collect();
    for expected in ["ci.yml", "explore.yml"] {
        assert!(
            names.iter().any(|name| name == expected),
            "no .github/workflows/{expected} among {names:?}"
        );
    }
    let Some((actionlint_bin, shellcheck)) = tools("the_workflows_pass_actionlint_and_shellcheck")
    else {
        return;
    };
    let out = actionlint(&actionlint_bin, &shellcheck, &files);
    assert!(
        out.status.success(),
        "actionlint found problems in {names:?} ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workflow with one mistake of each kind the check is for: a key misspelt, an expression
/// on a property that does not exist, a job needing one that does not exist, and a `run:`
/// script shellcheck objects to.
const BROKEN: &str = r#"name: broken
on:
  push:
    branch: main
jobs:
  test:
    runs-on: ubuntu-latest
    needs: build
    steps:
      - uses: actions/checkout@v6
      - run: echo "${{ matrix.shard }}"
      - run: cd $HOME/dir && ls
"#;

#[test]
fn actionlint_reports_a_broken_workflow() {
    let Some((actionlint_bin, shellcheck)) = tools("actionlint_reports_a_broken_workflow") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("xtask-workflows-{}", std::process::id()));
    let workflows = dir.join(".github/workflows");
    std::fs::create_dir_all(&workflows).expect("a temporary directory");
    let file = workflows.join("broken.yml");
    std::fs::write(&file, BROKEN).expect("the broken workflow is written");
    let out = actionlint(&actionlint_bin, &shellcheck, std::slice::from_ref(&file));
    let _ = std::fs::remove_dir_all(&dir);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "actionlint must fail on the broken workflow (1: problems found):\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (rule, what) in [
        ("[syntax-check]", "the misspelt `branch`"),
        ("[expression]", "`matrix.shard` without a matrix"),
        ("[job-needs]", "a job that needs a missing job"),
        ("[shellcheck]", "an unquoted $HOME (SC2086)"),
    ] {
        assert!(
            report.contains(rule),
            "actionlint did not report {what} ({rule}):\n{report}"
        );
    }
    assert!(
        report.contains("SC2086"),
        "shellcheck did not run:\n{report}"
    );
}
