//! A connection read in large gulps. HTTP/2 (h2, through tokio-util's framing) reads its socket
//! 8 KiB at a time, so an SDK batch of ~100 KiB took a dozen `recvfrom` calls, each of which may
//! also send the client a window-opening ACK. [`ReadAhead`] asks the socket for up to a gulp at
//! once and serves h2's small reads from memory.
//!
//! The buffer exists only while unread bytes are in it or a read is under way: a connection
//! that waits for its next request holds none, so idle connections cost what they did before.
//! A connection whose bytes h2 has stopped taking (a client not reading its answers) keeps at
//! most one gulp here that would otherwise wait in the kernel's socket buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one read of the socket may take.
pub const GULP_BYTES: usize = 64 * 1024;

/// `inner`, with reads taken from the socket a gulp at a time; writes pass straight through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    buffer: BytesMut,
    gulp: usize,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S, gulp: usize) -> Self {
        Self {
            inner,
            buffer: BytesMut::new(),
            gulp,
        }
    }

    /// Bytes read from the socket and not yet handed on, and the memory held for them.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        (self.buffer.len(), self.buffer.capacity())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if out.remaining() == 0 {
            return Poll::Ready(Ok(())); // as a socket answers a read of no room
        }
        if this.buffer.is_empty() {
            if out.remaining() >= this.gulp {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            // An emptied buffer is reused where it stands (`reserve` reclaims it).
            this.buffer.reserve(this.gulp);
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buffer);
            match read {
                Poll::Ready(Ok(n)) if n > 0 => {}
                // Nothing to read yet, the end of the stream (`out` stays unfilled) or an error:
                // no buffer is held meanwhile.
                other => {
                    this.buffer = BytesMut::new();
                    return other.map_ok(|_| ());
                }
            }
        }
        let n = out.remaining().min(this.buffer.len());
        out.put_slice(&this.buffer[..n]);
        this.buffer.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for ReadAhead<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A stream that counts the reads asked of it.
    struct Counted {
        inner: DuplexStream,
        reads: usize,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, out)
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Reads `n` bytes in reads of at most `size`, as h2 does.
    async fn read_in_pieces<S: AsyncRead + Unpin>(from: &mut S, n: usize, size: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut piece = vec![0; size];
        while got.len() < n {
            let read = from.read(&mut piece).await.unwrap();
            assert!(
                read > 0,
                "the stream ended after {} of {n} bytes",
                got.len()
            );
            got.extend_from_slice(&piece[..read]);
        }
        got
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_gulp_of_the_socket() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let sent = pattern(100 * 1024);
        client.write_all(&sent).await.unwrap();
        let mut conn = ReadAhead::new(
            Counted {
                inner: server,
                reads: 0,
            },
            GULP_BYTES,
        );

        let got = read_in_pieces(&mut conn, sent.len(), 8 * 1024).await;

        assert_eq!(got, sent);
        // 100 KiB in 8 KiB reads: two gulps of the socket instead of 13 reads.
        assert_eq!(conn.inner.reads, 2);
    }

    #[tokio::test]
    async fn bytes_arrive_whole_and_in_order_whatever_the_sizes_of_writes_and_reads() {
        for (write, read, gulp) in [
            (1, 3, 4),
            (1000, 7, 16),
            (5000, 4096, 1024),
            (17, 65536, 64),
        ] {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let sent = pattern(20_000);
            let writer = {
                let sent = sent.clone();
                tokio::spawn(async move {
                    for chunk in sent.chunks(write) {
                        client.write_all(chunk).await.unwrap();
                    }
                    client
                })
            };
            let mut conn = ReadAhead::new(server, gulp);
            let got = read_in_pieces(&mut conn, sent.len(), read).await;
            assert_eq!(
                got, sent,
                "writes of {write}, reads of {read}, gulps of {gulp}"
            );
            drop(writer.await.unwrap());
            // The writer is gone: the end of the stream passes through.
            assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn a_connection_waiting_for_bytes_holds_no_buffer() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&pattern(10_000)).await.unwrap();
        let mut conn = ReadAhead::new(server, GULP_BYTES);
        let mut piece = [0; 4096];
        conn.read_exact(&mut piece).await.unwrap();
        assert_eq!(conn.held().0, 10_000 - 4096);
        assert!(conn.held().1 >= GULP_BYTES - 4096, "read a gulp at once");

        read_in_pieces(&mut conn, 10_000 - 4096, 4096).await;
        // Nothing more has been written: the next read waits, and the buffer is let go.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(20), conn.read(&mut piece));
        assert!(waiting.await.is_err());
        assert_eq!(conn.held(), (0, 0));
    }

    #[tokio::test]
    async fn a_read_with_no_room_takes_nothing() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(b"kept").await.unwrap();
        let mut conn = ReadAhead::new(server, GULP_BYTES);
        let mut none = ReadBuf::new(&mut []);
        std::future::poll_fn(|cx| Pin::new(&mut conn).poll_read(cx, &mut none))
            .await
            .unwrap();
        assert_eq!(conn.held(), (0, 0), "the socket was not read");
        let mut got = [0; 4];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"kept");
    }

    #[tokio::test]
    async fn writes_pass_straight_through() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut conn = ReadAhead::new(server, GULP_BYTES);
        conn.write_all(b"an answer").await.unwrap();
        conn.flush().await.unwrap();
        let mut got = [0; 9];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"an answer");
    }
}
