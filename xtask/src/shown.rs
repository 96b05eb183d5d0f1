//! Paths as the person who ran the command sees them: relative to their working directory,
//! with `..` where needed, so no output names a machine's absolute paths.

use std::path::{Path, PathBuf};

/// `path` (absolute, or relative to the working directory) relative to the working directory.
pub fn shown(path: &Path) -> PathBuf {
    let Ok(cwd) = std::env::current_dir() else {
        return path.to_path_buf();
    };
    match pathdiff::diff_paths(cwd.join(path), &cwd) {
        Some(relative) if relative.as_os_str().is_empty() => PathBuf::from("."),
        Some(relative) => relative,
        None => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shown_from_the_working_directory() {
        let cwd = std::env::current_dir().expect("a working directory");
        assert_eq!(shown(&cwd.join("target/x")), Path::new("target/x"));
        assert_eq!(shown(&cwd), Path::new("."));
        let parent = cwd.parent().expect("not the root");
        assert_eq!(shown(&parent.join("y")), Path::new("../y"));
        assert_eq!(shown(Path::new("z")), Path::new("z"));
    }
}
