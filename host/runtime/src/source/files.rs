//! The files receiver: new files in a directory, each read whole, once.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Inbox, sleep_unless_stopped};

/// How often the directory is listed.
const POLL: Duration = Duration::from_millis(100);

/// A watched directory and the names already seen in it.
#[derive(Debug)]
pub(super) struct Watcher {
    dir: PathBuf,
    /// Names present at start (ignored) and names taken since.
    seen: HashSet<OsString>,
}

impl Watcher {
    /// Creates `dir` if missing and remembers the files already in it, which
    /// are never read (only files that appear later are).
    pub(super) fn new(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        let seen = std::fs::read_dir(dir)
            .and_then(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<std::io::Result<HashSet<_>>>()
            })
            .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            seen,
        })
    }

    /// Polls the directory until `stop` is set.
    pub(super) fn run(mut self, name: &str, inbox: &Inbox, stop: &AtomicBool) {
        while !sleep_unless_stopped(stop, POLL) {
            if let Err(e) = self.poll(name, inbox, stop) {
                tracing::warn!(source = name, dir = %self.dir.display(), error = %e, "cannot list the directory");
            }
        }
    }

    /// Takes every complete file not seen before, in name order.
    fn poll(&mut self, name: &str, inbox: &Inbox, stop: &AtomicBool) -> std::io::Result<()> {
        let mut new = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let file_name = entry?.file_name();
            if self.seen.contains(&file_name) || !complete_name(&file_name) {
                continue;
            }
            new.push(file_name);
        }
        new.sort();
        for file_name in new {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let path = self.dir.join(&file_name);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                // A directory or something else: never a file to take.
                Ok(_) => {
                    self.seen.insert(file_name);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(source = name, path = %path.display(), error = %e, "cannot read the file; skipping it");
                    self.seen.insert(file_name);
                    continue;
                }
            }
            match std::fs::read(&path) {
                Ok(text) => {
                    let n = inbox.push_lines_until(&text, stop);
                    tracing::debug!(source = name, path = %path.display(), records = n, "file taken");
                }
                Err(e) => {
                    tracing::warn!(source = name, path = %path.display(), error = %e, "cannot read the file; skipping it");
                }
            }
            self.seen.insert(file_name);
        }
        Ok(())
    }
}

/// False for names writers use while a file is incomplete: starting with `.`
/// or ending in `.tmp`.
fn complete_name(name: &OsString) -> bool {
    let name = name.as_encoded_bytes();
    !name.starts_with(b".") && !name.ends_with(b".tmp")
}
