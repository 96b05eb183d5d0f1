//! Every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` run through its
//! target on stable, as a plain test: the seeds and the fixed crashes stay passing. Fails if a
//! directory names no target, or a target has no corpus.

use std::fs;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/targets is inside fuzz/")
        .to_path_buf()
}

/// The target directories under `fuzz/<kind>/`, with their files, sorted.
fn target_dirs(kind: &str) -> Vec<(String, Vec<PathBuf>)> {
    let root = fuzz_dir().join(kind);
    let Ok(entries) = fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut dirs: Vec<(String, Vec<PathBuf>)> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_dir())
        .map(|dir| {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 directory name")
                .to_owned();
            let mut files: Vec<PathBuf> = fs::read_dir(&dir)
                .expect("readable target directory")
                .map(|entry| entry.expect("readable file entry").path())
                .filter(|path| path.is_file())
                .collect();
            files.sort();
            (name, files)
        })
        .collect();
    dirs.sort();
    dirs
}

fn replay(kind: &str) -> usize {
    let mut inputs = 0;
    for (name, files) in target_dirs(kind) {
        let run = fuzz_targets::target(&name).unwrap_or_else(|| {
            panic!(
                "fuzz/{kind}/{name}/ names no fuzz target (known: {:?})",
                names()
            )
        });
        for file in files {
            let data = fs::read(&file).expect("readable input");
            eprintln!(
                "{kind}/{name}/{}",
                file.file_name().unwrap_or_default().display()
            );
            run(&data);
            inputs += 1;
        }
    }
    inputs
}

fn names() -> Vec<&'static str> {
    fuzz_targets::TARGETS
        .iter()
        .map(|&(name, _)| name)
        .collect()
}

#[test]
fn every_target_has_a_corpus() {
    let corpora = target_dirs("corpus");
    for name in names() {
        let files = corpora
            .iter()
            .find(|(dir, _)| dir == name)
            .map(|(_, files)| files.len())
            .unwrap_or(0);
        assert!(files > 0, "fuzz/corpus/{name}/ is missing or empty");
    }
}

#[test]
fn corpus_inputs_pass() {
    assert!(replay("corpus") > 0);
}

#[test]
fn fixed_crashes_stay_fixed() {
    replay("regressions");
}
