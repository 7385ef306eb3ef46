//! The operator's one error type: what can go wrong while reconciling a SpanSink, and what to do.
//! Not for invalid pipelines: those are a normal outcome reported in the status, not an error.

/// A failed reconciliation; the controller logs it, records a Warning event and retries
/// with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object came without name, namespace or uid (never from a real API server).
    #[error("SpanSink is missing metadata.{0}; it cannot own children without it")]
    MissingObjectKey(&'static str),

    /// A call to the Kubernetes API failed.
    #[error(
        "Kubernetes API call failed while {action}: {source}; check the operator's RBAC and the API server's health"
    )]
    Kube {
        /// What the operator was doing, e.g. `applying Deployment team-a/traces`.
        action: String,
        #[source]
        source: kube::Error,
    },

    /// A child object could not be turned into JSON for server-side apply.
    #[error("cannot serialize {kind} for server-side apply: {source}")]
    Serialize {
        /// Kind of the child.
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Wraps a kube error with what the operator was doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// Short label for metrics (`reason`), stable across versions.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Kube { .. } => "kube_api",
            Error::Serialize { .. } => "serialize",
        }
    }
}

/// Result of the operator's fallible steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
