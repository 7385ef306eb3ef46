//! Settings of the stdout sink (`sinks.<name>.stdout`), for debugging.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::ValidateBackend;

/// Standard output, for debugging.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// `jsonl`: every span in full; `summary`: one short line per span. Default: `summary`.
    #[serde(default)]
    pub format: StdoutFormat,
}

/// Output of the stdout sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StdoutFormat {
    /// `trace_id span_id service name duration status`, one line per span.
    #[default]
    Summary,
    /// The same JSON object per span as the file sink writes.
    Jsonl,
}


/// Nothing to check beyond the types.
impl ValidateBackend for StdoutSinkConfig {}

