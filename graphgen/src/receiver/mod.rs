//! Where spans come in: OTLP/gRPC and OTLP/HTTP. Both read the request's bytes (within the size
//! limit, decompressed) and hand them to the [`crate::intake::Intake`], once [`admission`] has
//! let them in.

pub mod admission;
pub mod grpc;
pub mod http;
pub mod read_ahead;
