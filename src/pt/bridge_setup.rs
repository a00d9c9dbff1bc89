//! What a bridge runs and what it publishes, decided once at start-up.
//!
//! From the `ServerTransportOptions` (or the `water-pt bridge-line` options):
//! 1. the module, through the [`ModuleStore`] (built-in or file, checked against its pin);
//! 2. the configs: the operator's `water-config` (server) and `water-client-config` (published),
//!    or, when neither is given and the module [declares](super::bridge_config) per-bridge
//!    secrets, both rendered from the declaration with the bridge's own
//!    [secrets](super::secrets), generated on first start;
//! 3. a start-up check: the module runs up to `watm_init_v1` with the server config, so a
//!    module or config the module refuses fails the launch (`SMETHOD-ERROR` with the module's
//!    reason) rather than every connection;
//! 4. the arguments clients need: `water-sha256` of the module and the client config;
//! 5. for a module that is not built in, what its [delivery](super::delivery) port serves
//!    (the listener and the `water-fetch` arguments are added when it is bound).

use std::path::Path;
use std::sync::Arc;

use super::bridge::{parse_config, BridgeArgs};
use super::catalogue;
use super::delivery::plan::{DeliveryOptions, DeliveryPlan};
use super::modules::ModuleStore;
use super::secrets::SecretFile;
use crate::runtime::{Role, Watm};

/// The server option whose value (base64url) is published in `SMETHOD ... ARGS:` as the
/// clients' `water-config`.
pub const CLIENT_CONFIG_OPTION: &str = "water-client-config";

/// Everything a bridge decided at start-up.
#[derive(Debug)]
pub struct BridgeSetup {
    /// The module, checked: it has the listener role and accepted `server_config`.
    pub watm: Arc<Watm>,
    /// What the bridge's module reads as `/conf/watm.cfg`.
    pub server_config: Option<Vec<u8>>,
    /// The `k=v` arguments clients need, for `SMETHOD ... ARGS:` and the bridge-line file.
    pub published: Vec<(String, String)>,
    /// How the configs were chosen, for one log line.
    pub keying: Keying,
    /// What the delivery port serves; `None` for a built-in module or `water-fetch-port=off`.
    pub delivery: Option<DeliveryPlan>,
}

/// Where a bridge's configs came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keying {
    /// The operator gave them (or the module needs none).
    Operator,
    /// Rendered from the module's declaration with secrets generated just now.
    Generated,
    /// Rendered from the module's declaration with the secrets stored earlier.
    Stored,
}

impl BridgeSetup {
    /// Decides and checks everything; `options` are the transport's `(key, value)` options.
    /// The error is one line saying what to fix.
    pub async fn prepare(
        options: &[(String, String)],
        modules: &Arc<ModuleStore>,
        state_dir: &Path,
    ) -> Result<Self, String> {
        let mut client_config = None;
        let mut module_options = Vec::new();
        for (key, value) in options {
            if key == CLIENT_CONFIG_OPTION {
                if client_config.is_some() {
                    return Err(format!("{CLIENT_CONFIG_OPTION} is given twice"));
                }
                client_config =
                    Some(parse_config(value).map_err(|e| format!("{CLIENT_CONFIG_OPTION}: {e}"))?);
            } else {
                module_options.push((key.as_str(), value.as_str()));
            }
        }
        let delivery_options = DeliveryOptions::take(&mut module_options)
            .map_err(|e| format!("ServerTransportOptions: {e}"))?;
        let args = BridgeArgs::from_pairs(&module_options)
            .map_err(|e| format!("ServerTransportOptions: {e}"))?;
        if args.fetch.is_some() {
            return Err(
                "water-fetch and water-fetch-key are what the bridge publishes, not \
                        options (use water-fetch-port)"
                    .into(),
            );
        }
        let module_path = args.module_path(modules.module_dir().unwrap_or(Path::new("")));
        let mut server_config = args.config.clone();
        let watm = modules
            .select_blocking_off(args)
            .await
            .map_err(|e| e.to_string())?;
        watm.require(Role::Listener).map_err(|e| e.to_string())?;

        let mut keying = Keying::Operator;
        if server_config.is_none() && client_config.is_none() {
            let decl = modules
                .bridge_config(&watm)
                .map_err(|e| format!("module {}: {e}", watm.sha256_hex()))?;
            if let Some(decl) = decl {
                let secrets = SecretFile::in_dir(state_dir).ensure(&decl)?;
                keying = if secrets.generated.is_empty() {
                    Keying::Stored
                } else {
                    Keying::Generated
                };
                let (server, client) = decl.render(&secrets.values);
                server_config = Some(server);
                client_config = Some(client);
            }
        }
        modules
            .runtime()
            .check_init(watm.clone(), server_config.as_deref())
            .await
            .map_err(|e| {
                format!(
                    "module {} refused its configuration: {e} (fix water-config, or leave it \
                     out if the module keys itself)",
                    watm.sha256_hex()
                )
            })?;
        let delivery = match (catalogue::by_sha256(&watm.sha256()), module_path) {
            (None, Some(path)) => {
                DeliveryPlan::prepare(delivery_options, &watm.sha256(), &path, state_dir)?
            }
            _ => None,
        };
        let published = BridgeArgs {
            wasm: None,
            sha256: Some(watm.sha256()),
            config: client_config,
            fetch: None,
        }
        .to_pairs();
        Ok(Self {
            watm,
            server_config,
            published,
            keying,
            delivery,
        })
    }
}
