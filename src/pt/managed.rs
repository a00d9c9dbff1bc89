//! Managed mode: `water-pt` launched by tor.

/// Runs as a managed proxy configured by tor's environment.
pub async fn run() -> Result<(), String> {
    Err("managed mode is not available in this build".into())
}
