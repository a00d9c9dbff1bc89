//! What a bridge's options say about module delivery, and what it will serve.
//!
//! Options (taken out of `ServerTransportOptions` before the module's own are read):
//! `water-fetch-port=PORT|off`, `water-serve-also=PATH` (repeatable) and
//! `water-fetch-rate=N`. A bridge whose module is built in serves nothing.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::server::{Served, DEFAULT_RATE};
use super::{KEY_BYTES, KEY_SECRET};
use crate::pt::bridge_config::BridgeConfigDecl;
use crate::pt::modules::MAX_MODULE_BYTES;
use crate::pt::secrets::SecretFile;
use crate::runtime::sha256;

/// `water-fetch-port=PORT|off`.
pub const OPT_PORT: &str = "water-fetch-port";
/// `water-serve-also=PATH`, repeatable.
pub const OPT_SERVE_ALSO: &str = "water-serve-also";
/// `water-fetch-rate=N`.
pub const OPT_RATE: &str = "water-fetch-rate";
/// The file in `TOR_PT_STATE_LOCATION` remembering the delivery port chosen at first start.
pub const PORT_FILE: &str = "water_fetch_port";

/// Which port the delivery listener uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PortChoice {
    /// The one chosen at first start (a free one then), kept in [`PORT_FILE`].
    #[default]
    Remembered,
    /// `water-fetch-port=PORT`.
    Fixed(u16),
    /// `water-fetch-port=off`: no delivery.
    Off,
}

/// The delivery options of a bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryOptions {
    pub port: PortChoice,
    pub serve_also: Vec<PathBuf>,
    pub rate: Option<u32>,
}

impl DeliveryOptions {
    /// Removes the delivery options from `options` and interprets them.
    pub fn take(options: &mut Vec<(&str, &str)>) -> Result<Self, String> {
        let mut out = Self::default();
        let mut port_seen = false;
        let mut error = None;
        options.retain(|&(key, value)| {
            let parsed = match key {
                OPT_PORT if port_seen => Err(format!("{OPT_PORT} is given twice")),
                OPT_PORT => {
                    port_seen = true;
                    match value {
                        "off" => Ok(PortChoice::Off),
                        v => v
                            .parse::<u16>()
                            .ok()
                            .filter(|p| *p != 0)
                            .map(PortChoice::Fixed)
                            .ok_or_else(|| format!("{OPT_PORT}={v}: expected a port or off")),
                    }
                    .map(|p| out.port = p)
                }
                OPT_SERVE_ALSO => {
                    let path = PathBuf::from(value);
                    if path.is_absolute() {
                        out.serve_also.push(path);
                        Ok(())
                    } else {
                        Err(format!("{OPT_SERVE_ALSO}={value}: needs an absolute path"))
                    }
                }
                OPT_RATE if out.rate.is_some() => Err(format!("{OPT_RATE} is given twice")),
                OPT_RATE => value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|n| out.rate = Some(n))
                    .ok_or_else(|| {
                        format!("{OPT_RATE}={value}: expected downloads per hour (1 or more)")
                    }),
                _ => return true,
            };
            if let Err(e) = parsed {
                error.get_or_insert(e);
            }
            false
        });
        match error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Everything the bridge's delivery listener needs, decided at start-up.
#[derive(Debug)]
pub struct DeliveryPlan {
    /// [`PortChoice::Remembered`] or [`PortChoice::Fixed`].
    pub port: PortChoice,
    /// The delivery key, as published in `water-fetch-key`.
    pub key: String,
    pub served: Served,
    pub rate: u32,
}

impl DeliveryPlan {
    /// The plan for a bridge running the module at `path` whose SHA-256 is `digest` (not a
    /// built-in one): the module and every `water-serve-also` one read into memory, the
    /// delivery key from the bridge's secrets. `None` with `water-fetch-port=off`.
    pub fn prepare(
        options: DeliveryOptions,
        digest: &[u8; 32],
        path: &Path,
        state_dir: &Path,
    ) -> Result<Option<Self>, String> {
        if options.port == PortChoice::Off {
            return Ok(None);
        }
        let mut served = Served::new();
        let main = read_module(path)?;
        if sha256(&main) != *digest {
            return Err(format!(
                "module {} changed while the bridge was starting; start again",
                path.display()
            ));
        }
        served.insert(*digest, Arc::from(main));
        for also in &options.serve_also {
            let bytes = read_module(also).map_err(|e| format!("{OPT_SERVE_ALSO}: {e}"))?;
            served.insert(sha256(&bytes), Arc::from(bytes));
        }
        let decl = BridgeConfigDecl {
            secrets: BTreeMap::from([(KEY_SECRET.to_owned(), KEY_BYTES)]),
            server: String::new(),
            client: String::new(),
        };
        let key = SecretFile::in_dir(state_dir)
            .ensure(&decl)?
            .values
            .remove(KEY_SECRET)
            .ok_or("the delivery key is missing from the secrets file")?;
        Ok(Some(Self {
            port: options.port,
            key,
            served,
            rate: options.rate.unwrap_or(DEFAULT_RATE),
        }))
    }

    /// The `water-fetch` and `water-fetch-key` arguments for a listener on `port`.
    pub fn published(&self, port: u16) -> Vec<(String, String)> {
        use crate::pt::bridge::{KEY_FETCH, KEY_FETCH_KEY};
        vec![
            (KEY_FETCH.to_owned(), port.to_string()),
            (KEY_FETCH_KEY.to_owned(), self.key.clone()),
        ]
    }

    /// The port to listen on: the fixed one, the remembered one, or 0 (any free port).
    pub fn port_to_bind(&self, state_dir: &Path) -> u16 {
        match self.port {
            PortChoice::Fixed(p) => p,
            _ => remembered_port(state_dir).unwrap_or(0),
        }
    }
}

/// The delivery port remembered in `state_dir`, if any.
pub fn remembered_port(state_dir: &Path) -> Option<u16> {
    std::fs::read_to_string(state_dir.join(PORT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p != 0)
}

/// Remembers the delivery port in `state_dir`, so the bridge line survives a restart.
pub fn remember_port(state_dir: &Path, port: u16) -> io::Result<()> {
    if remembered_port(state_dir) == Some(port) {
        return Ok(());
    }
    let path = state_dir.join(PORT_FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, &path)
}

/// Reads a module file, refusing one over [`MAX_MODULE_BYTES`] unread.
fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    let fail = |e: io::Error| format!("cannot read module {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(fail)?;
    let len = file.metadata().map_err(fail)?.len();
    if len > MAX_MODULE_BYTES {
        return Err(format!(
            "module {} is {len} bytes; the limit is {MAX_MODULE_BYTES}",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_MODULE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` under a directory that is absolute on this platform.
    fn absolute(name: &str) -> PathBuf {
        std::env::temp_dir().join(name)
    }

    #[test]
    fn options_are_taken_out_and_checked() {
        // Absolute on this platform (`/old.wasm` is not, on Windows).
        let (old, older) = (absolute("old.wasm"), absolute("older.wasm"));
        let mut opts = vec![
            ("water-wasm", "/m.wasm"),
            (OPT_PORT, "8443"),
            (OPT_SERVE_ALSO, old.to_str().unwrap()),
            (OPT_SERVE_ALSO, older.to_str().unwrap()),
            (OPT_RATE, "5"),
        ];
        let d = DeliveryOptions::take(&mut opts).unwrap();
        assert_eq!(opts, [("water-wasm", "/m.wasm")]);
        assert_eq!(d.port, PortChoice::Fixed(8443));
        assert_eq!(d.serve_also, [old.clone(), older.clone()]);
        assert_eq!(d.rate, Some(5));

        let mut off = vec![(OPT_PORT, "off")];
        assert_eq!(
            DeliveryOptions::take(&mut off).unwrap().port,
            PortChoice::Off
        );
        assert_eq!(
            DeliveryOptions::take(&mut vec![]).unwrap().port,
            PortChoice::Remembered
        );
        for (bad, why) in [
            (vec![(OPT_PORT, "0")], "expected a port or off"),
            (vec![(OPT_PORT, "1"), (OPT_PORT, "2")], "given twice"),
            (vec![(OPT_SERVE_ALSO, "old.wasm")], "absolute path"),
            (vec![(OPT_SERVE_ALSO, "../old.wasm")], "absolute path"),
            (vec![(OPT_RATE, "0")], "1 or more"),
        ] {
            let mut bad = bad;
            let e = DeliveryOptions::take(&mut bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn plan_reads_modules_keys_once_and_remembers_the_port() {
        let dir = std::env::temp_dir().join(format!("water-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (main, old) = (dir.join("main.wasm"), dir.join("old.wasm"));
        std::fs::write(&main, b"main module").unwrap();
        std::fs::write(&old, b"old module").unwrap();
        let options = DeliveryOptions {
            serve_also: vec![old.clone()],
            ..DeliveryOptions::default()
        };
        let digest = sha256(b"main module");
        let plan = DeliveryPlan::prepare(options.clone(), &digest, &main, &dir)
            .unwrap()
            .unwrap();
        assert_eq!(plan.served.len(), 2);
        assert_eq!(&plan.served[&sha256(b"old module")][..], b"old module");
        assert_eq!(plan.rate, DEFAULT_RATE);
        let again = DeliveryPlan::prepare(options.clone(), &digest, &main, &dir)
            .unwrap()
            .unwrap();
        assert_eq!(again.key, plan.key, "the key is kept across restarts");

        assert_eq!(plan.port_to_bind(&dir), 0);
        remember_port(&dir, 40123).unwrap();
        assert_eq!(plan.port_to_bind(&dir), 40123);

        let e = DeliveryPlan::prepare(options, &[0; 32], &main, &dir).unwrap_err();
        assert!(e.contains("changed"), "{e}");
        let off = DeliveryOptions {
            port: PortChoice::Off,
            ..DeliveryOptions::default()
        };
        assert!(DeliveryPlan::prepare(off, &digest, &main, &dir)
            .unwrap()
            .is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
