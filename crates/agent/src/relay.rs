//! A TCP relay from the node's bridge address to an API server that listens on loopback only
//! (`yun up`'s default): pods cannot route to the host's 127.0.0.1, so the `kubernetes`
//! Service's endpoint is the bridge gateway, and this relay carries each connection on. TLS
//! passes through untouched (the server's certificate names the address it serves; clients
//! in pods verify it with the cluster CA), as k3s' agent load balancer does.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};

/// Bind `listen` (the bridge's gateway address and the API server's port).
pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API relay on {listen}"))
}

/// Relay every connection accepted on `listener` to `upstream`, until the task is dropped.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            match TcpStream::connect(upstream).await {
                Ok(mut up) => {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                }
                Err(e) => tracing::debug!("API relay to {upstream}: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let relay = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let at = relay.local_addr().unwrap();
        let task = tokio::spawn(serve(relay, upstream));
        let mut c = TcpStream::connect(at).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        task.abort();
    }
}
