//! On-disk cache of compiled modules, so a restart does not recompile.
//!
//! Compiling a module takes tens of milliseconds; loading a compiled
//! artifact takes a fraction of one. Artifacts are keyed by the module's
//! SHA-256 and by the engine's compatibility hash (wasmtime version, target
//! and settings), so a changed engine never picks up a stale artifact.
//!
//! This is the crate's only `unsafe`: wasmtime's `Module::deserialize` runs
//! the machine code it is given, so the bytes must be ones wasmtime itself
//! produced. The cache keeps them in a directory only the owner may access
//! (mode 0700 on Unix) and prefixes each file with the SHA-256 of its artifact, so a
//! truncated or corrupted file is detected and recompiled instead of loaded.

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
    pub fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        crate::sys::create_private_dir(dir)?;
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
        let file = std::fs::read(self.path(sha256)).ok()?;
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
                std::fs::write(&tmp, &file)?;
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
