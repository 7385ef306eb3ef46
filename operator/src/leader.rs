//! Leader election on a coordination.k8s.io/v1 Lease (through kube-lease-manager): only the
//! holder reconciles. Not a lock for anything else; losing the Lease ends the process, and a
//! clean exit releases it so that a standby replica takes over at once, not after expiry.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease in the operator's namespace.
pub const LEASE_NAME: &str = "spansink-operator";
/// Seconds a Lease stays valid without renewal; a new leader takes over after this.
const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry at which the holder renews.
const GRACE_SECONDS: u64 = 5;

/// Why leadership could not be obtained or was lost.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read or created.
    #[error(
        "leader election on Lease {namespace}/{LEASE_NAME} failed: {source}; check the Role for coordination.k8s.io leases"
    )]
    Lease {
        namespace: String,
        #[source]
        source: LeaseManagerError,
    },
    /// The election task ended (it only ends on an API failure or shutdown).
    #[error("leader election stopped; exiting so another replica can take over")]
    Stopped,
}

/// How long a clean exit waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Holds leadership once acquired; [`Leadership::lost`] resolves when it is gone.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Resolves when this replica is no longer the leader.
    pub async fn lost(&mut self) {
        while *self.state.borrow_and_update() {
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the Lease up (the election task releases it once nobody watches its state).
    pub async fn release(self) {
        let Leadership { state, task } = self;
        drop(state);
        match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
            Ok(Ok(Ok(_))) => tracing::info!(lease = %LEASE_NAME, "leader Lease released"),
            Ok(Ok(Err(e))) => {
                tracing::warn!(lease = %LEASE_NAME, error = %e, "cannot release the leader Lease; it expires on its own")
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %LEASE_NAME, error = %e, "leader election task failed")
            }
            Err(_) => tracing::warn!(
                lease = %LEASE_NAME,
                timeout_s = RELEASE_TIMEOUT.as_secs(),
                "leader Lease not released in time; it expires on its own"
            ),
        }
    }
}

/// Waits until this replica (`identity`, usually the pod name) holds the Lease.
pub async fn acquire(
    client: Client,
    namespace: &str,
    identity: &str,
) -> Result<Leadership, LeaderError> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_field_manager(format!("spansink-operator-{identity}"))
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await
        .map_err(|source| LeaderError::Lease {
            namespace: namespace.into(),
            source,
        })?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(
        lease = %LEASE_NAME,
        namespace = %namespace,
        identity = %identity,
        "waiting for leadership"
    );
    while !*state.borrow_and_update() {
        state.changed().await.map_err(|_| LeaderError::Stopped)?;
    }
    tracing::info!(lease = %LEASE_NAME, namespace = %namespace, identity = %identity, "became leader");
    Ok(Leadership { state, task })
}
