//! Writing two buffers as one message (a head and the body after it), in
//! one vectored write where the socket takes it: used by both sides of
//! palisade's HTTP/1.1 engine.

use std::io::IoSlice;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes all of `first`, then all of `second`.
pub async fn write_two<I: AsyncWrite + Unpin>(
    io: &mut I,
    first: &[u8],
    second: &[u8],
) -> std::io::Result<()> {
    let (mut first, mut second) = (first, second);
    while !first.is_empty() || !second.is_empty() {
        let written = if first.is_empty() {
            io.write(second).await?
        } else if second.is_empty() {
            io.write(first).await?
        } else {
            let parts = [IoSlice::new(first), IoSlice::new(second)];
            io.write_vectored(&parts).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_first = written.min(first.len());
        first = &first[from_first..];
        second = &second[written - from_first..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_parts_arrive_in_order() {
        let mut out = Vec::new();
        write_two(&mut out, b"head ", b"body").await.unwrap();
        write_two(&mut out, b"", b"+").await.unwrap();
        write_two(&mut out, b"!", b"").await.unwrap();
        assert_eq!(out, b"head body+!");
    }
}
