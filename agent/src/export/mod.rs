//! OTLP export: gRPC and HTTP/protobuf, retries with backoff, a bounded buffer.
