//! A bridge's own secrets, generated once and kept in tor's state directory.
//!
//! A self-keyed bridge (one whose module [declares](super::bridge_config) per-bridge secrets and
//! whose operator gave no config) must use the same secrets after every restart, or every bridge
//! line given out so far stops working. They live in `TOR_PT_STATE_LOCATION/water_secrets`, one
//! `name=value` line each, readable by the bridge's user only (0600), written whole to a
//! temporary file and renamed into place so a crash never leaves half a file.
//!
//! A secret is [`super::bridge_config::SECRET_BYTES`] random bytes from the OS as unpadded
//! URL-safe base64. A stored value of the wrong length for the declaration (the module changed
//! its mind) is replaced, with a warning: lines given out before no longer work then.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::bridge_config::BridgeConfigDecl;

/// The file in `TOR_PT_STATE_LOCATION` holding the bridge's secrets.
pub const SECRETS_FILE: &str = "water_secrets";

/// The secrets file of one state directory.
#[derive(Debug, Clone)]
pub struct SecretFile {
    path: PathBuf,
}

/// What [`SecretFile::ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    /// Every declared secret, by name.
    pub values: BTreeMap<String, String>,
    /// Names generated now (new bridge, or a stored value that did not fit).
    pub generated: Vec<String>,
}

impl SecretFile {
    /// The secrets file in `state_dir`.
    pub fn in_dir(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(SECRETS_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored secrets for `decl`, generating (and storing) the missing ones. Secrets of
    /// other modules already in the file are kept.
    pub fn ensure(&self, decl: &BridgeConfigDecl) -> Result<Ensured, String> {
        let mut stored = self.read()?;
        let mut generated = Vec::new();
        for (name, &size) in &decl.secrets {
            let fits = stored
                .get(name)
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .is_some_and(|bytes| bytes.len() == size);
            if !fits {
                if stored.contains_key(name) {
                    tracing::warn!(
                        "{}: secret {name:?} is not {size} bytes; generating a new one \
                         (bridge lines given out before stop working)",
                        self.path.display()
                    );
                }
                let mut bytes = vec![0u8; size];
                getrandom::fill(&mut bytes)
                    .map_err(|e| format!("cannot generate a secret: {e}"))?;
                stored.insert(name.clone(), URL_SAFE_NO_PAD.encode(&bytes));
                generated.push(name.clone());
            }
        }
        if !generated.is_empty() {
            self.write(&stored)
                .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        }
        let values = decl
            .secrets
            .keys()
            .filter_map(|k| stored.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        Ok(Ensured { values, generated })
    }

    fn read(&self) -> Result<BTreeMap<String, String>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let mut out = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| {
                format!(
                    "{} line {}: expected name=value (fix or delete the file; deleting it \
                     makes new secrets and a new bridge line)",
                    self.path.display(),
                    n + 1
                )
            })?;
            out.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        Ok(out)
    }

    fn write(&self, secrets: &BTreeMap<String, String>) -> io::Result<()> {
        let mut text = String::from(
            "# water-pt per-bridge secrets. Keep this file private; deleting it changes the\n\
             # bridge line (clients with the old one can no longer connect).\n",
        );
        for (k, v) in secrets {
            text.push_str(&format!("{k}={v}\n"));
        }
        let tmp = self.path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        // A file restored from a backup with looser permissions is tightened too.
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(size: usize) -> BridgeConfigDecl {
        BridgeConfigDecl::parse(&format!(
            r#"{{"secrets":{{"pw":{size}}},"server":"{{{{pw}}}}","client":"{{{{pw}}}}"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn generated_once_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("water-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = SecretFile::in_dir(&dir);
        let first = file.ensure(&decl(32)).unwrap();
        assert_eq!(first.generated, ["pw"]);
        let pw = first.values["pw"].clone();
        assert_eq!(URL_SAFE_NO_PAD.decode(&pw).unwrap().len(), 32);
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let again = SecretFile::in_dir(&dir).ensure(&decl(32)).unwrap();
        assert!(again.generated.is_empty());
        assert_eq!(again.values["pw"], pw, "reused across restarts");

        let resized = file.ensure(&decl(16)).unwrap();
        assert_eq!(resized.generated, ["pw"]);
        assert_ne!(resized.values["pw"], pw);

        std::fs::write(file.path(), "garbage\n").unwrap();
        let e = file.ensure(&decl(16)).unwrap_err();
        assert!(e.contains("line 1") && e.contains("name=value"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
