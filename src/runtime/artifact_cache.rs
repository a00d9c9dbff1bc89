//! On-disk cache of compiled modules, so a restart does not recompile.
//!
//! Compiling a module takes tens of milliseconds; loading a compiled
//! artifact takes a fraction of one. Artifacts are keyed by the module's
//! SHA-256 and by the engine's compatibility hash (wasmtime version, target
//! and settings), so a changed engine never picks up a stale artifact.
//!
//! Apart from the platform calls in `sys`, this is the crate's only
//! `unsafe`: wasmtime's `Module::deserialize` runs the machine code it is
//! given, so the bytes must be ones wasmtime itself produced. The cache
//! keeps them in a directory only the owner may access (mode 0700) and
//! prefixes each file with the SHA-256 of its artifact, so a truncated or
//! corrupted file is detected and recompiled instead of loaded.

#![allow(unsafe_code)]

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_tag: String,
}

impl ArtifactCache {
    /// Opens (creating it with mode 0700 if needed) the cache directory.
    /// An existing directory is used only if this user owns it and nobody
    /// else may write to it: anyone who can put a file there could make the
    /// runtime run their machine code.
    pub fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        crate::sys::create_private_dir(dir)?;
        check_private_dir(dir, "the compiled-module cache")?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir: dir.to_owned(),
            engine_tag: format!("{:016x}", h.finish()),
        })
    }

    fn path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(sha256), self.engine_tag))
    }

    /// Loads the compiled artifact of the module with this hash, if cached
    /// and intact.
    pub fn get(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<Module> {
        let file = read_own_file(&self.path(sha256)).ok()?;
        if file.len() < 32 {
            return None;
        }
        let (sum, artifact) = file.split_at(32);
        if Sha256::digest(artifact).as_slice() != sum {
            tracing::warn!(
                "compiled-module cache entry for {} is corrupt; recompiling",
                hex::encode(sha256)
            );
            return None;
        }
        // SAFETY: `artifact` was produced by `Module::serialize` of an engine
        // with the same compatibility hash (it is part of the file name), was
        // written by this user into a directory only they can write, and its
        // checksum matches, so it is exactly the bytes wasmtime wrote.
        // wasmtime additionally rejects artifacts from another version or
        // configuration.
        match unsafe { Module::deserialize(engine, artifact) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("cannot load cached module {}: {e:#}", hex::encode(sha256));
                None
            }
        }
    }

    /// Stores a compiled module (best effort: a failure is only logged).
    pub fn put(&self, sha256: &[u8; 32], module: &Module) {
        let result = module
            .serialize()
            .map_err(io::Error::other)
            .and_then(|artifact| {
                let mut file = Sha256::digest(&artifact).to_vec();
                file.extend_from_slice(&artifact);
                let path = self.path(sha256);
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                write_new_file(&tmp, &file)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(
                "cannot write compiled-module cache in {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// On Windows the directory (under `%LOCALAPPDATA%` or tor's state
/// directory) takes its parent's access list; ownership and mode bits are
/// Unix's, checked on Unix only.
#[cfg(windows)]
pub(crate) fn check_private_dir(dir: &Path, purpose: &str) -> io::Result<()> {
    let _ = (dir, purpose);
    Ok(())
}

/// Whether `dir` may hold files that are trusted later (compiled modules, downloaded
/// modules): a directory, not a symbolic link, owned by this user, that group and others
/// cannot write. The error names `purpose` and says what is wrong.
#[cfg(unix)]
pub(crate) fn check_private_dir(dir: &Path, purpose: &str) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("not using {} as {purpose}: {why}", dir.display()),
        ))
    };
    if !meta.is_dir() {
        return refuse("it is not a directory (a symbolic link is not followed)".into());
    }
    if meta.uid() != me {
        return refuse(format!(
            "it is owned by uid {}, not by this user ({me})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "group or others may write to it (mode {:o}); chmod go-w it",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Reads a cache file.
#[cfg(windows)]
fn read_own_file(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// Reads a cache file, refusing a symbolic link and a file of another user.
#[cfg(unix)]
fn read_own_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    if file.metadata()?.uid() != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "cache file of another user",
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Creates a new file (never following or reusing an existing name).
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    crate::sys::create_private_file(path)?.write_all(bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("water-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn a_directory_others_may_write_is_refused_with_the_reason() {
        let engine = Engine::default();
        let dir = temp("open");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ArtifactCache::open(&dir, &engine).err().unwrap();
        assert!(
            err.to_string().contains("group or others may write"),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(ArtifactCache::open(&dir, &engine).is_ok());
        let link = temp("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = ArtifactCache::open(&link, &engine).err().unwrap();
        assert!(err.to_string().contains("not a directory"), "{err}");
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cache_files_are_not_read_through_symbolic_links() {
        let dir = temp("files");
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        write_new_file(&target, b"bytes").unwrap();
        assert_eq!(read_own_file(&target).unwrap(), b"bytes");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_own_file(&link).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
