//! The files sink: one file per batch, written atomically.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Output, Sink};
use crate::Error;

/// Writes `DIR/STREAM-NNNNNNNNNN.txt` through `DIR/.STREAM-NNNNNNNNNN.txt.tmp`.
#[derive(Debug)]
pub(super) struct FilesSink {
    name: String,
    dir: PathBuf,
}

impl FilesSink {
    /// Creates `dir` if missing.
    pub(super) fn open(name: &str, dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Sink {
            name: name.to_string(),
            message: format!("cannot create directory {}: {e}", dir.display()),
        })?;
        Ok(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        })
    }

    fn write_file(&self, tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let io = |what: &str, p: &Path, e| {
            Error::io(format!("sink `{}`: {what} {}", self.name, p.display()), e)
        };
        let mut file = File::create(tmp).map_err(|e| io("creating", tmp, e))?;
        file.write_all(bytes).map_err(|e| io("writing", tmp, e))?;
        file.sync_all().map_err(|e| io("syncing", tmp, e))?;
        drop(file);
        std::fs::rename(tmp, path).map_err(|e| io("renaming into", path, e))?;
        // Make the rename itself durable where directories can be synced.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Sink for FilesSink {
    fn write(&mut self, out: &Output<'_>) -> Result<(), Error> {
        if out.stream.is_empty() || out.stream.contains(['/', '\\']) {
            return Err(Error::Sink {
                name: self.name.clone(),
                message: format!("stream name `{}` cannot name a file", out.stream),
            });
        }
        let file_name = format!("{}-{:010}.txt", out.stream, out.batch);
        let path = self.dir.join(&file_name);
        let tmp = self.dir.join(format!(".{file_name}.tmp"));
        let result = self.write_file(&tmp, &path, out.render().as_bytes());
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}
