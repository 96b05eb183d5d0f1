//! `vpnsim promote FILE NAME`: turns a scenario file (typically one a failing `explore` run
//! wrote) into a corpus story `scenarios/corpus/NAME.yaml`, whose snapshots the corpus test
//! then creates.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use scenario_format::{LoadError, Scenario};

use crate::corpus::is_slug;

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(
        "`{0}` is not a corpus name: use lowercase letters and digits in words joined by dashes, e.g. `same-relay-roam`"
    )]
    NotASlug(String),
    #[error("{0} already exists: choose another name")]
    Exists(PathBuf),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`promote`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    pub path: PathBuf,
    pub scenario: Scenario,
}

/// The commands that create (and check) the snapshots of a newly promoted story.
pub const SNAPSHOT_COMMANDS: [&str; 2] = [
    "INSTA_UPDATE=unseen cargo test -p scenarios --test corpus",
    "cargo insta test --accept -p scenarios --test corpus",
];

/// Copies the scenario at `source` into `corpus/<name>.yaml`: validates it first, renames it
/// to `name` and puts a header comment saying where it came from above its text (its own
/// comments are kept). Refuses a name that is not a slug or that the corpus already has.
pub fn promote(source: &Path, name: &str, corpus: &Path) -> Result<Promoted, PromoteError> {
    if !is_slug(name) {
        return Err(PromoteError::NotASlug(name.to_owned()));
    }
    let target = corpus.join(format!("{name}.yaml"));
    if target.exists() {
        return Err(PromoteError::Exists(target));
    }
    let origin = source.display().to_string();
    let text = std::fs::read_to_string(source).map_err(|source| LoadError::Read {
        path: origin.clone(),
        source,
    })?;
    let scenario = Scenario::from_yaml(&text, &origin)?;
    let body = match rename(&text, name) {
        Some(renamed) => renamed,
        None => {
            let mut renamed = scenario.clone();
            renamed.name = name.to_owned();
            renamed.to_yaml()
        }
    };
    let promoted_text = format!(
        "# Promoted from {origin} by `vpnsim promote`.\n\
         # Say here what this story shows and what must happen.\n{body}"
    );
    let scenario = Scenario::from_yaml(&promoted_text, &target.display().to_string())?;
    write_new(&target, &promoted_text)?;
    Ok(Promoted {
        path: target,
        scenario,
    })
}

/// `text` with its top-level `name:` line replaced, or `None` if it has no such line.
fn rename(text: &str, name: &str) -> Option<String> {
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if !found && (line.starts_with("name:") || line.starts_with("\"name\":")) {
                found = true;
                format!("name: {name}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    found.then(|| lines.join("\n") + "\n")
}

/// Writes a file that must not exist yet (another promote may race this one).
fn write_new(path: &Path, text: &str) -> Result<(), PromoteError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| PromoteError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(PromoteError::Exists(path.to_owned()));
        }
        Err(source) => {
            return Err(PromoteError::Write {
                path: path.to_owned(),
                source,
            });
        }
    };
    file.write_all(text.as_bytes())
        .map_err(|source| PromoteError::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILURE: &str = "\
name: failure-0
description: Found by `vpnsim explore`. flow records differ from the model.
topology:
  clients:
  - name: alice
    stack: v4
  gateways:
  - name: gw
    stack: v4
  resources:
  - name: web
    gateway: gw
    cidr: 198.51.100.10/32
  grants:
  - client: alice
    resource: web
steps:
- udp:
    client: alice
    resource: web
    port: 53
    bytes: 4
";

    /// A fresh directory under the system's temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vpnsim-promote-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn promotes_a_failure_with_a_header_and_the_new_name() {
        let dir = temp_dir("ok");
        let source = dir.join("failure-0.yaml");
        std::fs::write(&source, FAILURE).expect("write");
        let corpus = dir.join("corpus");
        let promoted = promote(&source, "udp-lost-echo", &corpus).expect("promoted");
        assert_eq!(promoted.path, corpus.join("udp-lost-echo.yaml"));
        assert_eq!(promoted.scenario.name, "udp-lost-echo");
        let text = std::fs::read_to_string(&promoted.path).expect("read");
        assert!(
            text.starts_with(&format!(
                "# Promoted from {} by `vpnsim promote`.\n",
                source.display()
            )),
            "{text}"
        );
        assert!(text.contains("\nname: udp-lost-echo\n"), "{text}");
        assert!(!text.contains("failure-0\n"), "{text}");
        assert!(
            text.contains("description: Found by `vpnsim explore`."),
            "{text}"
        );
        let reread = Scenario::from_file(&promoted.path).expect("valid");
        let mut original = Scenario::from_yaml(FAILURE, "f").expect("valid");
        original.name = "udp-lost-echo".to_owned();
        assert_eq!(reread, original);

        // The same name again: refused, the file is left as it was.
        let again = promote(&source, "udp-lost-echo", &corpus).expect_err("exists");
        assert!(matches!(again, PromoteError::Exists(_)), "{again}");
        assert!(
            again
                .to_string()
                .ends_with("udp-lost-echo.yaml already exists: choose another name")
        );
        assert_eq!(std::fs::read_to_string(&promoted.path).expect("read"), text);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_names_that_are_not_slugs() {
        let dir = temp_dir("slug");
        let source = dir.join("failure-0.yaml");
        std::fs::write(&source, FAILURE).expect("write");
        for bad in ["../escape", "Upper", "two words", "a.yaml", ""] {
            let error = promote(&source, bad, &dir).expect_err("not a slug");
            assert!(matches!(error, PromoteError::NotASlug(_)), "{bad}: {error}");
        }
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_an_invalid_scenario_with_file_and_line() {
        let dir = temp_dir("invalid");
        let source = dir.join("broken.yaml");
        std::fs::write(
            &source,
            FAILURE.replacen("    resource: web\n", "    resource: ghost\n", 1),
        )
        .expect("write");
        let corpus = dir.join("corpus");
        let error = promote(&source, "broken", &corpus).expect_err("invalid");
        assert!(
            matches!(error, PromoteError::Load(LoadError::Invalid { .. })),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "{}:16: topology.grants[0]: no resource named `ghost`",
                source.display()
            )
        );
        assert!(!corpus.join("broken.yaml").exists());

        let missing = promote(&dir.join("nope.yaml"), "nope", &corpus).expect_err("missing");
        assert!(
            missing
                .to_string()
                .ends_with("nope.yaml: cannot read the file"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn renames_only_the_top_level_name() {
        let text = "# c\nname: old\ntopology:\n  clients: [{ name: alice, stack: v4 }]\n";
        assert_eq!(
            rename(text, "new").as_deref(),
            Some("# c\nname: new\ntopology:\n  clients: [{ name: alice, stack: v4 }]\n")
        );
        assert_eq!(rename("{ name: x }", "new"), None);
    }
}
