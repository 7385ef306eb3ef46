//! Span encodings shared by sinks.
