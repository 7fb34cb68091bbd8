//! The agent-side TLS handshake inside a CONNECT tunnel.
//!
//! The certificate is always minted for the CONNECT target, and a ClientHello whose SNI names another host is
//! refused: the destination is decided once, by the CONNECT line, and TLS cannot be used to smuggle another.

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::leaf::LeafCache;
use super::TlsError;
use crate::route::normalize_host;

pub async fn accept<IO>(
    io: IO,
    target_host: &str,
    leaves: &LeafCache,
    limit: Duration,
) -> Result<TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(TlsError::Handshake)?;
        if let Some(sni) = start.client_hello().server_name() {
            let sni = normalize_host(sni);
            if sni != target_host {
                return Err(TlsError::SniMismatch {
                    sni,
                    target: target_host.to_string(),
                });
            }
        }
        let config = leaves.server_config(target_host).await?;
        start.into_stream(config).await.map_err(TlsError::Handshake)
    };
    tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_| TlsError::HandshakeTimeout)?
}
