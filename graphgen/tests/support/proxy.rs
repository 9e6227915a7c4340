//! A TCP proxy that cuts connections: every connection is closed (both ways) after a random
//! number of bytes from the client, so requests break mid-way — a load balancer restarting or
//! a flaky network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct CuttingProxy {
    pub port: u16,
    /// Connections cut before their client closed them.
    pub cuts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Forwards loopback connections to `upstream`, cutting each after a random
    /// `cut_after.0..cut_after.1` bytes from the client.
    pub async fn start(upstream: u16, cut_after: (u64, u64)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicU64::new(0));
        let counter = cuts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue; // the client sees a closed connection
                };
                let limit = fastrand::u64(cut_after.0..cut_after.1);
                tokio::spawn(pipe(client, server, limit, counter.clone()));
            }
        });
        Self { port, cuts, task }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, limit: u64, cuts: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 << 10];
        let mut total = 0u64;
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            let room = (limit - total) as usize;
            if n >= room {
                let _ = server_write.write_all(&buf[..room]).await;
                return true; // cut here, mid-request
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return false;
            }
            total += n as u64;
        }
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    let cut = tokio::select! {
        cut = upstream => cut,
        _ = downstream => false,
    };
    if cut {
        cuts.fetch_add(1, Ordering::Relaxed);
    }
    // Dropping both halves of both sockets closes the connection in both directions.
}
