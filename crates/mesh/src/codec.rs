//! The request-response codec seam: one versioned CBOR frame per request and per response,
//! read with a hard size limit before anything is decoded.

use std::{io, marker::PhantomData};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use serde::{Serialize, de::DeserializeOwned};

/// A request-response codec for `Req`/`Resp`, with per-direction size limits.
pub struct CborCodec<Req, Resp> {
    request_limit: usize,
    response_limit: usize,
    types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> CborCodec<Req, Resp> {
    pub fn new(request_limit: usize, response_limit: usize) -> Self {
        Self {
            request_limit,
            response_limit,
            types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.request_limit, self.response_limit)
    }
}

/// Reads one frame to the end of the stream (the writer closes after it), at most `limit`
/// bytes. Also for raw streams that carry one request and one answer.
pub async fn read_frame<T, I>(io: &mut I, limit: usize) -> io::Result<T>
where
    T: DeserializeOwned,
    I: AsyncRead + Unpin + Send,
{
    let mut bytes = Vec::new();
    // One byte over the limit is enough to know the frame is too large.
    io.take(limit as u64 + 1).read_to_end(&mut bytes).await?;
    mycel_protocol::decode(&bytes, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame and closes the writing side.
pub async fn write_frame<T, I>(io: &mut I, message: &T) -> io::Result<()>
where
    T: Serialize,
    I: AsyncWrite + Unpin + Send,
{
    let bytes = mycel_protocol::encode(message)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    io.write_all(&bytes).await?;
    io.close().await
}

/// Writes `message` as one length-prefixed frame (a `u32` big-endian length, then a versioned
/// CBOR frame), for raw streams that carry more than one frame or bytes after it.
pub async fn write_prefixed<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> io::Result<()> {
    let bytes = mycel_protocol::encode(message).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(&bytes).await?;
    writer.flush().await
}

/// Reads one length-prefixed frame of at most `limit` bytes; `None` when the stream ended cleanly
/// before it.
pub async fn read_prefixed<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    limit: usize,
) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes exceeds the limit of {limit}"),
        ));
    }
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes).await?;
    mycel_protocol::decode(&bytes, limit)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl<Req, Resp> request_response::Codec for CborCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.request_limit).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_limit).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &resp).await
    }
}
