//! `/metrics`: the registry's Prometheus text, streamed. A page is never held whole: the
//! encoder writes into chunks of [`CHUNK_BYTES`] that go out as the client reads them. With
//! 2048-byte labels one series costs kilobytes of text, so a full page can be hundreds of MB
//! while the extra memory per scrape stays a few chunks plus the listed values.

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How much text is encoded before it is handed to the client.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks of a registry's Prometheus text, as they are encoded. The encoder runs on a blocking
/// thread and waits while the client is slow (two chunks in flight at most); a client that goes
/// away ends the encoding.
pub fn stream(registry: Arc<Registry>) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink {
            tx,
            chunk: String::with_capacity(CHUNK_BYTES),
        };
        // An error means the client went away: nothing left to do.
        if prometheus_client::encoding::prometheus_text::encode(&mut sink, &registry).is_ok() {
            let _ = sink.send();
        }
    });
    rx
}

/// Collects text into chunks and sends each full one.
struct ChunkSink {
    tx: mpsc::Sender<Bytes>,
    chunk: String,
}

impl ChunkSink {
    fn send(&mut self) -> std::fmt::Result {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, String::with_capacity(CHUNK_BYTES));
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| std::fmt::Error)
    }
}

impl std::fmt::Write for ChunkSink {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.chunk.push_str(s);
        if self.chunk.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    /// The whole page, as a scraper reads it.
    async fn read_all(mut rx: mpsc::Receiver<Bytes>) -> (String, usize) {
        let (mut page, mut chunks) = (String::new(), 0);
        while let Some(chunk) = rx.recv().await {
            assert!(chunk.len() <= 2 * CHUNK_BYTES, "a chunk of {}", chunk.len());
            page.push_str(std::str::from_utf8(&chunk).unwrap());
            chunks += 1;
        }
        (page, chunks)
    }

    #[tokio::test]
    async fn a_streamed_page_is_the_encoder_s_text_in_bounded_chunks() {
        let mut registry = Registry::default();
        for i in 0..2_000 {
            let counter: Counter = Counter::default();
            counter.inc_by(i);
            registry.register(format!("c{i}"), "a counter", counter);
        }
        let mut whole = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut whole, &registry).unwrap();
        let (page, chunks) = read_all(stream(Arc::new(registry))).await;
        assert_eq!(page, whole);
        assert!(chunks > 1, "{} bytes in {chunks} chunk(s)", page.len());
    }
}
