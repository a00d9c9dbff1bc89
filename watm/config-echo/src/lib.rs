//! `config-echo`: a test fixture that shows the runtime's configuration
//! delivery from inside the module.
//!
//! At the start of `watm_start_v1` it sends the caller the exact bytes of
//! `/conf/watm.cfg`, or the six bytes [`NO_CONFIG`] when the runtime gave no
//! configuration. After that it passes bytes through like `plain`. Any bytes
//! are accepted as configuration (it parses nothing), and
//! `watm_dial_fixed_v1` always connects to [`FIXED_REMOTE`].

#![forbid(unsafe_code)]

use watm_sdk::{Errno, Role, Transport};

/// What the caller receives first when there is no configuration file.
pub const NO_CONFIG: &[u8] = b"<none>";

/// Where `watm_dial_fixed_v1` connects.
pub const FIXED_REMOTE: &str = "localhost:7700";

/// The echoing transport; holds the configuration until it is sent.
#[derive(Debug)]
pub struct ConfigEcho {
    config: Option<Vec<u8>>,
}

impl Transport for ConfigEcho {
    fn init(config: Option<Vec<u8>>) -> Result<Self, Errno> {
        Ok(Self { config })
    }

    fn fixed_remote(&self) -> Result<(&str, &str), Errno> {
        Ok(("tcp", FIXED_REMOTE))
    }

    fn on_start(&mut self, _: Role, to_caller: &mut Vec<u8>, _: &mut Vec<u8>) -> Result<(), Errno> {
        match self.config.take() {
            Some(config) => to_caller.extend_from_slice(&config),
            None => to_caller.extend_from_slice(NO_CONFIG),
        }
        Ok(())
    }

    fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend_from_slice(input);
        Ok(())
    }

    fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend_from_slice(input);
        Ok(())
    }
}

watm_sdk::export_transport!(ConfigEcho);

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(config: Option<Vec<u8>>) -> Vec<u8> {
        let mut echo = ConfigEcho::init(config).unwrap();
        let (mut to_caller, mut to_network) = (Vec::new(), Vec::new());
        echo.on_start(Role::Dialer, &mut to_caller, &mut to_network)
            .unwrap();
        assert!(to_network.is_empty());
        to_caller
    }

    #[test]
    fn sends_config_or_marker_first() {
        assert_eq!(greeting(None), NO_CONFIG);
        assert_eq!(greeting(Some(vec![0, 0xff, b'\n'])), [0, 0xff, b'\n']);
        assert_eq!(greeting(Some(Vec::new())), b"");
    }
}
