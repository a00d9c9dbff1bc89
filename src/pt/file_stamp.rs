//! Knowing, from one `stat`, that a module file is still the one loaded before.
//!
//! A bridge line that names its module by path is looked up on every SOCKS connection. The
//! module store already keys what it compiled by the file's size and time, but finding the
//! key meant opening and resolving the file on tokio's blocking pool: two thread hand-overs
//! and half a dozen system calls per connection for a module that has not changed. A stamp
//! taken when the file was read answers the same question with one `stat` on the calling
//! thread.

use crate::runtime::Watm;
use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// How old a file's modification time must be before its stamp is trusted. File times tick
/// coarsely (a scheduler tick on Linux), so a file rewritten in place within the tick it was
/// read in, to the same length, would keep its stamp; a file that has sat still for this long
/// cannot be in that window any more.
const SETTLED: Duration = Duration::from_secs(2);

/// What one `stat` says about a file, compared whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    identity: (u64, u64),
    len: u64,
    mtime: SystemTime,
}

impl FileStamp {
    /// The stamp of `meta`; `None` when it cannot be trusted: no file identity on this
    /// platform, no modification time, or one too recent (see [`SETTLED`]).
    pub fn of(meta: &Metadata) -> Option<Self> {
        let mtime = meta.modified().ok()?;
        if SystemTime::now().duration_since(mtime).ok()? < SETTLED {
            return None;
        }
        Some(Self {
            identity: crate::sys::file_identity(meta)?,
            len: meta.len(),
            mtime,
        })
    }
}

/// Modules loaded from files, by the path they were loaded from, with the file's stamp then.
#[derive(Debug, Default)]
pub struct RecentFiles {
    by_path: Mutex<HashMap<PathBuf, (FileStamp, Arc<Watm>)>>,
}

impl RecentFiles {
    /// The module loaded from `path`, if the file there still has the stamp it had.
    pub fn get(&self, path: &Path) -> Option<Arc<Watm>> {
        let now = FileStamp::of(&std::fs::metadata(path).ok()?)?;
        let map = self.by_path.lock().unwrap_or_else(PoisonError::into_inner);
        let (stamp, watm) = map.get(path)?;
        (*stamp == now).then(|| watm.clone())
    }

    /// Remembers that `watm` was loaded from `path`, whose file had the metadata `meta` (taken
    /// from the open file, so that it describes the bytes that were read).
    pub fn remember(&self, path: &Path, meta: &Metadata, watm: &Arc<Watm>) {
        if let Some(stamp) = FileStamp::of(meta) {
            self.by_path
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(path.to_path_buf(), (stamp, watm.clone()));
        }
    }
}

/// Sets `path`'s modification time `secs` seconds back, for tests of the settling rule.
#[cfg(test)]
pub(super) fn backdate(path: &Path, secs: u64) {
    let when = SystemTime::now() - Duration::from_secs(secs);
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(when))
        .unwrap();
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn aged(path: &Path, secs: u64) -> Metadata {
        backdate(path, secs);
        std::fs::metadata(path).unwrap()
    }

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("file-stamp-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.wasm");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_settled_file_has_a_stamp_that_changes_with_it() {
        let path = temp("settled", b"one");
        let first = FileStamp::of(&aged(&path, 60)).expect("settled");
        assert_eq!(
            FileStamp::of(&std::fs::metadata(&path).unwrap()),
            Some(first)
        );
        // Same length, other time.
        std::fs::write(&path, b"two").unwrap();
        let second = FileStamp::of(&aged(&path, 30)).expect("settled");
        assert_ne!(first, second);
        // Same length and time, but another file renamed over it.
        let other = path.with_extension("new");
        std::fs::write(&other, b"two").unwrap();
        backdate(&other, 30);
        std::fs::rename(&other, &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_ne!(
            FileStamp::of(&meta),
            Some(second),
            "a new inode is a new file"
        );
    }

    #[test]
    fn a_file_written_just_now_has_no_stamp() {
        let path = temp("fresh", b"fresh");
        assert_eq!(FileStamp::of(&std::fs::metadata(&path).unwrap()), None);
        assert!(
            FileStamp::of(&aged(&path, 1)).is_none(),
            "inside the settling time"
        );
        assert!(FileStamp::of(&aged(&path, 3)).is_some());
    }
}
