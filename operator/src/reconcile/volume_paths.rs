//! Pipeline paths checked against the pod the operator renders: the exporter accepts any
//! durable queue directory, but in an exporter pod only the queue volume at
//! `/var/lib/spansink` is writable and kept with the pod. Not the exporter's own checks.

use std::path::{Component, Path};

use spansink_config::{ExporterConfig, ValidationError};

use super::DATA_DIR;

/// One error per sink whose durable queue directory is not below [`DATA_DIR`], with the
/// field path from the pipeline's root (`sinks.<name>.queue.durable.path`).
pub fn durable_queues_off_the_volume(pipeline: &ExporterConfig) -> Vec<ValidationError> {
    pipeline
        .sinks
        .iter()
        .filter_map(|(name, sink)| {
            let durable = sink.queue.durable.as_ref()?;
            let directory = durable.directory(name);
            (!below_data_dir(&directory)).then(|| ValidationError {
                path: format!("sinks.{name}.queue.durable.path"),
                message: format!(
                    "{} is not a directory below {DATA_DIR}, where spec.queueVolume is mounted: \
                     the rest of the exporter's filesystem is read-only (or, for /tmp, not the \
                     queue volume), so the queue could not be kept there; use a directory below \
                     {DATA_DIR}, e.g. the default {DATA_DIR}/queue/{name}",
                    directory.display()
                ),
            })
        })
        .collect()
}

/// Strictly below: the volume's root may hold the filesystem's own entries (`lost+found`
/// on a fresh PersistentVolume), which a queue directory must not contain. `..` is refused
/// rather than resolved: the path is the exporter's to resolve, not ours.
fn below_data_dir(directory: &Path) -> bool {
    directory.is_absolute()
        && directory.starts_with(DATA_DIR)
        && directory != Path::new(DATA_DIR)
        && !directory
            .components()
            .any(|c| matches!(c, Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<ValidationError> {
        durable_queues_off_the_volume(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn only_directories_below_the_queue_volume_pass() {
        let with = |path: &str| {
            errors(&format!(
                "sinks:\n  main:\n    blackhole: {{}}\n    queue:\n      durable:\n        path: {path}\n"
            ))
        };
        assert!(with("/var/lib/spansink/queue/main").is_empty());
        assert!(with("/var/lib/spansink/q").is_empty());
        for bad in [
            "/data/queue",
            "/tmp/queue",
            "/var/lib/spansink",
            "/var/lib/spansink/",
            "/var/lib/spansinkx/q",
            "/var/lib/spansink/../etc",
            "var/lib/spansink/q",
        ] {
            let e = with(bad);
            assert_eq!(e.len(), 1, "{bad} admitted");
            assert_eq!(e[0].path, "sinks.main.queue.durable.path");
            assert!(
                e[0].message.contains("/var/lib/spansink/queue/main"),
                "{}",
                e[0].message
            );
        }
        // The default directory is on the volume; a sink without a durable queue has none.
        assert!(
            errors("sinks:\n  main:\n    blackhole: {}\n    queue:\n      durable: {}\n")
                .is_empty()
        );
        assert!(errors("sinks:\n  main:\n    blackhole: {}\n").is_empty());
    }
}
