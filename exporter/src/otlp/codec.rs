//! gRPC codecs that move the trace request as raw protobuf bytes: the receiver keeps the
//! request bytes it was sent (checked by `wire::scan`, never decoded into structs) and the
//! OTLP sink forwards batch bytes as they are. Responses still use prost.

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::ProstCodec;

/// Server side of `TraceService/Export`: request in as bytes, response out as a message.
#[derive(Debug, Clone, Default)]
pub struct ServerCodec;

impl Codec for ServerCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder =
        <ProstCodec<ExportTraceServiceResponse, ExportTraceServiceResponse> as Codec>::Encoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<ExportTraceServiceResponse, ExportTraceServiceResponse>::raw_encoder(
            BufferSettings::default(),
        )
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

/// Client side: request out as bytes (an encoded batch), response in as a message.
#[derive(Debug, Clone, Default)]
pub struct ClientCodec;

impl Codec for ClientCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = BytesEncoder;
    type Decoder =
        <ProstCodec<ExportTraceServiceResponse, ExportTraceServiceResponse> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<ExportTraceServiceResponse, ExportTraceServiceResponse>::raw_decoder(
            BufferSettings::default(),
        )
    }
}

/// Takes the whole (already decompressed, size-limited by tonic) message body.
#[derive(Debug, Clone, Default)]
pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// Writes bytes that are already an encoded message.
#[derive(Debug, Clone, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}
