//! The request-response codec: one CBOR message per substream, read with the wire limits.
//! A message that arrives whole but does not decode is handed up as an error value, so the node
//! can answer it with a reason instead of dropping the stream.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use otpmesh_protocol::wire::{
    self, Request, Response, WireError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
};
use std::io;

#[derive(Clone, Default)]
pub struct WireCodec;

async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            WireError::TooLarge {
                len: buf.len(),
                max,
            },
        ));
    }
    Ok(buf)
}

async fn write_message<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: Vec<u8>) -> io::Result<()> {
    io.write_all(&bytes).await
}

fn refuse_to_send(e: &WireError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("refusing to send an undecodable message: {e}"),
    )
}

impl libp2p::request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Result<Request, WireError>;
    type Response = Result<Response, WireError>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Request> {
        Ok(wire::decode_request(
            &read_limited(io, MAX_REQUEST_BYTES).await?,
        ))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response> {
        Ok(wire::decode_response(
            &read_limited(io, MAX_RESPONSE_BYTES).await?,
        ))
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Self::Request,
    ) -> io::Result<()> {
        match request {
            Ok(r) => write_message(io, wire::encode_request(&r)).await,
            Err(e) => Err(refuse_to_send(&e)),
        }
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Self::Response,
    ) -> io::Result<()> {
        match response {
            Ok(r) => write_message(io, wire::encode_response(&r)).await,
            Err(e) => Err(refuse_to_send(&e)),
        }
    }
}
