//! gRPC codecs that keep OTLP trace requests as the protobuf bytes they arrived as: the receiver
//! reads a request's bytes before deciding whether to decode it (a full queue refuses without
//! decoding), and the exporter sends queued bytes as they are. Concatenated encodings of
//! `ExportTraceServiceRequest` are themselves one valid request (its only field is repeated, and
//! protobuf merges repeated fields), so a batch is its parts written one after the other.

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// The gRPC path of OTLP trace export.
pub const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The gRPC service name of OTLP trace export.
pub const TRACE_SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

/// Server side: the request as bytes, the response encoded with prost.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReceiveCodec;

/// Client side: a request written from its encoded parts, the response decoded with prost.
#[derive(Debug, Default, Clone, Copy)]
pub struct ForwardCodec;

/// Encoded `ExportTraceServiceRequest`s that together make one request.
pub type Parts = Vec<Bytes>;

impl Codec for ReceiveCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ProstEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

impl Codec for ForwardCodec {
    type Encode = Parts;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PartsEncoder;
    type Decoder = ProstDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PartsEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder
    }
}

pub struct ProstEncoder;

impl Encoder for ProstEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

pub struct ProstDecoder;

impl Decoder for ProstDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable response: {e}")))
    }
}

pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    // tonic gathers a request's frames in a buffer of this size, grown by reallocation (a
    // copy) when the request is larger; an SDK's batch of 512 spans is about 100 KiB.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(RECEIVE_BUFFER_BYTES, 32 * 1024)
    }
}

/// The buffer a received request starts in (tonic's default is 8 KiB).
const RECEIVE_BUFFER_BYTES: usize = 128 * 1024;

pub struct PartsEncoder;

impl Encoder for PartsEncoder {
    type Item = Parts;
    type Error = Status;

    fn encode(&mut self, parts: Parts, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(parts.iter().map(Bytes::len).sum());
        for part in &parts {
            dst.put_slice(part);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use crate::workload::client_server_request;

    #[test]
    fn concatenated_requests_decode_as_one_request_with_every_resource() {
        let a = ExportTraceServiceRequest {
            resource_spans: client_server_request(1),
        };
        let b = ExportTraceServiceRequest {
            resource_spans: client_server_request(2),
        };
        let mut joined = a.encode_to_vec();
        joined.extend(b.encode_to_vec());
        let merged = ExportTraceServiceRequest::decode(&joined[..]).unwrap();
        let mut want = a.resource_spans.clone();
        want.extend(b.resource_spans.clone());
        assert_eq!(merged.resource_spans, want);
    }
}
