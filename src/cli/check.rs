//! `water-pt check` and `water-pt bridge-line`: what a bridge would do at start-up, by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::{Args, ValueEnum};

use super::ModuleArgs;
use crate::pt::bridge::{bridge_line as format_line, KEY_CONFIG, KEY_WASM};
use crate::pt::bridge_setup::{BridgeSetup, Keying, CLIENT_CONFIG_OPTION};
use crate::pt::modules::ModuleStore;
use crate::runtime::{Limits, Role};

/// The roles `check --role` can ask for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Dialer,
    FixedDialer,
    Listener,
    Relay,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Dialer => Role::Dialer,
            RoleArg::FixedDialer => Role::FixedDialer,
            RoleArg::Listener => Role::Listener,
            RoleArg::Relay => Role::Relay,
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub module: ModuleArgs,
    /// Also require the export this role needs.
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
}

/// Loads the module, checks the role, runs it up to `watm_init_v1` with the config.
pub async fn check(args: CheckArgs, limits: Limits) -> Result<(), String> {
    let (runtime, watm, config) = args.module.load(limits)?;
    if let Some(role) = args.role {
        watm.require(role.into()).map_err(|e| e.to_string())?;
    }
    runtime
        .check_init(watm.clone(), config.as_deref())
        .await
        .map_err(|e| format!("the module refused its configuration: {e}"))?;
    let roles: Vec<_> = watm.roles().iter().map(|r| r.name()).collect();
    println!(
        "ok: module {} (roles: {}) accepted {}",
        watm.sha256_hex(),
        roles.join(", "),
        if config.is_some() {
            "its config"
        } else {
            "running without a config"
        }
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct BridgeLineArgs {
    #[command(flatten)]
    pub module: ModuleArgs,
    /// The config clients get (published as their water-config); by default
    /// none, or the module's own keying when neither config is given.
    #[arg(long, value_name = "FILE")]
    pub client_config: Option<PathBuf>,
    /// The bridge's state directory, where a self-keyed bridge keeps its
    /// secrets (tor's `<DataDirectory>/pt_state`; created if missing).
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The bridge's public address (default: a placeholder to fill in).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,
    /// The bridge's identity fingerprint (default: a placeholder to fill in).
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
}

/// Prints the line a bridge with these options publishes.
pub async fn bridge_line(args: BridgeLineArgs, limits: Limits) -> Result<(), String> {
    let runtime = args.module.runtime(limits)?;
    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| format!("--state-dir {}: {e}", args.state_dir.display()))?;
    let mut options = Vec::new();
    if let Some(wasm) = &args.module.wasm {
        // A file is named by its absolute path, as a bridge's options would.
        let value = match std::path::absolute(wasm) {
            Ok(p) if wasm.components().count() > 1 || wasm.exists() => p,
            _ => wasm.clone(),
        };
        options.push((KEY_WASM.to_owned(), value.display().to_string()));
    }
    if let Some(config) = args.module.config_bytes()? {
        options.push((KEY_CONFIG.to_owned(), URL_SAFE_NO_PAD.encode(config)));
    }
    if let Some(path) = &args.client_config {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        options.push((
            CLIENT_CONFIG_OPTION.to_owned(),
            URL_SAFE_NO_PAD.encode(bytes),
        ));
    }
    let store = Arc::new(ModuleStore::new(runtime, None));
    let setup = BridgeSetup::prepare(&options, &store, &args.state_dir).await?;
    if setup.keying == Keying::Generated {
        eprintln!(
            "water-pt: generated a new per-bridge secret in {}",
            crate::pt::secrets::SecretFile::in_dir(&args.state_dir)
                .path()
                .display()
        );
    }
    let mut published = setup.published.clone();
    if let Some(plan) = &setup.delivery {
        match plan.port_to_bind(&args.state_dir) {
            0 => eprintln!(
                "water-pt: this module is not built in; the bridge also serves it for download \
                 on a port chosen at its first start (see water_bridgeline.txt then)"
            ),
            port => published.extend(plan.published(port)),
        }
    }
    let placeholder_addr = SocketAddr::from(([0, 0, 0, 0], 0));
    let line = format_line(
        args.addr.unwrap_or(placeholder_addr),
        args.fingerprint.as_deref(),
        &published,
    )
    .map_err(|e| e.to_string())?;
    let line = if args.addr.is_none() {
        line.replacen(&placeholder_addr.to_string(), "<ADDRESS:PORT>", 1)
    } else {
        line
    };
    let line = if args.fingerprint.is_none() {
        line.replacen(" water-", " <FINGERPRINT> water-", 1)
    } else {
        line
    };
    println!("{line}");
    Ok(())
}
