//! The admin API token: the configured one, or one generated at start. Mutating admin endpoints (`/block`,
//! `/unblock`, `/reload`...) always require it; without a token, any process in the pod's network namespace,
//! the agent included, could lift its own kill switch.
//!
//! A generated token is written with mode 0600 to `--admin-token-file` (env `KEYWARD_ADMIN_TOKEN_FILE`), by
//! default `admin.token` next to the CA certificate, where the `keyward admin` command finds it. In a pod the
//! CA is a read-only Secret: the file then goes to a volume only the sidecar mounts.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::secrets::Secret;

const FILE_NAME: &str = "admin.token";

/// Where a generated token is written: `file` when given, else next to the configuration's CA certificate.
pub fn generated_path(config: &Config, file: Option<&Path>) -> PathBuf {
    match file {
        Some(file) => file.to_path_buf(),
        None => config.ca_cert.parent().unwrap_or(Path::new(".")).join(FILE_NAME),
    }
}

/// The configured token, or a new random one (then `true`: it must be [`publish`]ed once the rest of the
/// configuration has loaded, so that a refused configuration creates no file).
pub fn at_start(config: &Config) -> Result<(Secret, bool), String> {
    if let Some(source) = &config.admin_token {
        return source.read().map(|t| (t, false));
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no system randomness for the admin token".to_string())?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((Secret::new(token), true))
}

/// Writes a generated token to [`generated_path`] (mode 0600, replacing an earlier one) and returns the path.
pub fn publish(config: &Config, file: Option<&Path>, token: &Secret) -> Result<PathBuf, String> {
    let path = generated_path(config, file);
    write_private(&path, token.expose()).map_err(|e| {
        format!(
            "{}: {e}: no admin_token is configured and the generated one cannot be written there; \
             set admin_token, or --admin-token-file to a writable path",
            path.display()
        )
    })?;
    Ok(path)
}

/// The token a client should present: the configured one, or the one the running proxy generated.
pub fn for_client(config: &Config, file: Option<&Path>) -> Result<Secret, String> {
    match &config.admin_token {
        Some(source) => source.read(),
        None => {
            let path = generated_path(config, file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e} (is keyward running with this configuration?)", path.display()))?;
            Ok(Secret::new(text.trim()))
        }
    }
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
