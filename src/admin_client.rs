//! `keyward admin`: calls a running proxy's admin API with the token it expects, so operators never copy the
//! token by hand.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::config::Config;

/// One admin call: `(method, path)` against the proxy configured at `config`, with the token it expects
/// (`token_file`: where a generated one was written, as given to `keyward run`). Returns the status and body.
pub fn call(config: &Path, token_file: Option<&Path>, method: &str, path: &str) -> Result<(u16, String), String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let token = crate::admin_token::for_client(&config, token_file)?;
    let mut addr = config.admin;
    if addr.ip().is_unspecified() {
        addr = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port());
    }
    let io = |e: std::io::Error| format!("admin API at {addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: keyward-admin\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        token.expose()
    )
    .map_err(io)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(io)?;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("admin API at {addr}: not an HTTP answer"))?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
