//! Settings of the file sink (`sinks.<name>.file`): path, line format, compression,
//! rotation. Only the settings; the exporter's `sinks::file` implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Compression;
use crate::units::{ByteSize, Duration};
use crate::validate::{BackendAt, ValidateBackend, Validator};

/// Files of spans on local disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Path of the active file, e.g. `./spans/spans.jsonl`. Relative paths are relative
    /// to the exporter's working directory; missing directories are created. Rotated
    /// files are renamed to `<stem>-<UTC time>-<n>.<ext>` beside it.
    pub path: String,
    /// Line format. Default: `jsonl`.
    #[serde(default)]
    pub format: FileFormat,
    /// Compression of the written files. Default: `none`.
    #[serde(default)]
    pub compression: Compression,
    /// When the active file is closed and a new one started.
    #[serde(default)]
    pub rotation: RotationConfig,
    /// Size of the in-memory write buffer. Default: `256KiB`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "FileSinkConfig::default_buffer_size")]
    pub buffer_size: ByteSize,
    /// Whether each batch is fsync'ed to disk before it counts as delivered (safer, slower).
    /// Batches are always flushed to the operating system. Default: `false`.
    #[serde(default)]
    pub fsync: bool,
}

impl FileSinkConfig {
    fn default_buffer_size() -> ByteSize {
        ByteSize::kib(256)
    }
}

/// Line format of the file sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON object per span per line, with typed attribute values.
    #[default]
    Jsonl,
    /// One row per span with a header line; nested values (attributes, events, links,
    /// resource) are JSON text in their column.
    Csv,
}

/// File rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Rotate when the active file reaches this size (bytes written, after
    /// compression). Default: `100MiB`; `null` turns size rotation off.
    // Serialized even when unset: skipping `null` would read back as the 100MiB default,
    // so a config written by the operator would rotate where its SpanSink said not to.
    #[serde(default = "RotationConfig::default_max_size")]
    pub max_size: Option<ByteSize>,
    /// Rotate when the active file is this old. Unset: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Rotated files kept beside the active one; the oldest are deleted. `0` keeps all.
    /// Default: `10`.
    #[serde(default = "RotationConfig::default_max_files")]
    pub max_files: u32,
}

impl RotationConfig {
    fn default_max_size() -> Option<ByteSize> {
        Some(ByteSize::mib(100))
    }
    fn default_max_files() -> u32 {
        10
    }
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            max_size: Self::default_max_size(),
            max_age: None,
            max_files: Self::default_max_files(),
        }
    }
}

impl ValidateBackend for FileSinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let f = self;
        if f.path.trim().is_empty() {
            v.error(format!("{path}.path"), "must not be empty");
        } else if f.path.ends_with('/') {
            v.error(
                format!("{path}.path"),
                "names a directory; give a file name, e.g. ./spans/spans.jsonl",
            );
        }
        if let Some(size) = f.rotation.max_size {
            v.min_size(format!("{path}.rotation.max_size"), size, ByteSize::kib(1));
        }
        if let Some(age) = f.rotation.max_age {
            v.positive(&format!("{path}.rotation.max_age"), age.get().is_zero());
        }
        v.min_size(
            format!("{path}.buffer_size"),
            f.buffer_size,
            ByteSize::kib(1),
        );
    }
}
