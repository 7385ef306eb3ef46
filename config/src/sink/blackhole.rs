//! Settings of the blackhole sink (`sinks.<name>.blackhole`): none.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::ValidateBackend;

/// Discards everything (after the receiver validated it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {}


/// Nothing to check beyond the types.
impl ValidateBackend for BlackholeSinkConfig {}

