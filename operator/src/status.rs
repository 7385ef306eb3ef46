//! The pure computation of a SpanSink's status from what reconcile decided and what the
//! workload (Deployment or StatefulSet) reports. Not the writing of it (the controller
//! patches the status subresource).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::crd::{Endpoints, SpanSink, SpanSinkStatus, condition};
use crate::reconcile::{
    Desired, GRPC_PORT, HTTP_PORT, METRICS_PORT, Rollout, SecretProblem, Workload, WorkloadKind,
    selector_string, service_host,
};

/// What the controller found in the cluster, beside the SpanSink itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    /// The exporter Deployment or StatefulSet as the cluster reports it (None if absent or
    /// not this SpanSink's).
    pub workload: Option<&'a Workload>,
    /// The other workload kind, still running until the new one has a ready pod (after a
    /// switch of queue volume).
    pub replacing: Option<WorkloadKind>,
    /// The children (`Kind namespace/name`) whose names are taken by objects this
    /// SpanSink does not control.
    pub name_conflicts: &'a [String],
    /// Why the claims the spec asks for are not applied (a StatefulSet's claim templates
    /// cannot change).
    pub refused_claim_change: Option<&'a str>,
    /// The Secrets (or keys) that `spec.secretMounts` needs and the cluster lacks.
    pub secret_problems: &'a [SecretProblem],
}

/// The status a SpanSink should show now; `now` stamps conditions whose status changed
/// (others keep their transition time).
pub fn compute(
    sink: &SpanSink,
    desired: &Desired,
    observed: &Observed<'_>,
    now: Time,
) -> SpanSinkStatus {
    let previous = sink.status.clone().unwrap_or_default();
    let name = sink.name_any();
    let namespace = sink.namespace().unwrap_or_default();
    let generation = sink.metadata.generation;
    let mut conditions = Vec::new();
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time,
        });
    };

    // ConfigValid: the exporter's validation and the operator's own (durable queue paths,
    // secret mounts). `invalid` is the reason, also Ready's.
    let invalid = match crate::reconcile::validate(sink) {
        Ok(()) => {
            set(
                condition::CONFIG_VALID,
                true,
                "Valid",
                "spec.pipeline passed the exporter's validation".into(),
            );
            None
        }
        Err(errors) => {
            let message = errors
                .0
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            let reason = if errors
                .0
                .iter()
                .all(|e| e.path.starts_with("spec.pipeline."))
            {
                "InvalidPipeline"
            } else {
                "InvalidSpec"
            };
            set(
                condition::CONFIG_VALID,
                false,
                reason,
                format!("{message}; the running exporter keeps its previous config"),
            );
            Some(reason)
        }
    };

    // Available / Progressing, from the Deployment or StatefulSet.
    let workload = observed.workload;
    let kind = workload.map_or_else(|| WorkloadKind::of(sink), Workload::kind);
    let Rollout {
        wanted,
        total,
        updated,
        ready,
        available,
        behind,
    } = workload.map(Workload::rollout).unwrap_or_default();
    let available = workload.is_some() && available > 0;
    let describe = format!("kubectl describe {} {name}", kind.as_str().to_lowercase());
    match workload {
        None => set(
            condition::AVAILABLE,
            false,
            &format!("{kind}Missing"),
            format!("{kind} {namespace}/{name} does not exist yet"),
        ),
        Some(_) if available => set(
            condition::AVAILABLE,
            true,
            "MinimumReplicasAvailable",
            format!("{ready} of {wanted} exporter pods ready"),
        ),
        Some(_) => set(
            condition::AVAILABLE,
            false,
            "NoReadyReplicas",
            format!("0 of {wanted} exporter pods ready; see `{describe}`"),
        ),
    }
    let rolling =
        workload.is_some() && (behind || updated < wanted || total > updated || ready < wanted);
    let progressing = rolling || observed.replacing.is_some();
    let progress_message = match observed.replacing {
        Some(old) => format!(
            "moving from {old} to {kind} (spec.queueVolume): {old} {name} is deleted once {kind} \
             {name} has a ready pod; {updated} of {wanted} pods updated, {ready} ready"
        ),
        None if progressing => format!("{updated} of {wanted} pods updated, {ready} ready"),
        None => "all exporter pods run the current template".into(),
    };
    set(
        condition::PROGRESSING,
        progressing,
        if progressing {
            "RollingOut"
        } else {
            "RolloutComplete"
        },
        progress_message,
    );

    // Ready: the one condition a user or a script waits on.
    let unmanaged = matches!(desired, Desired::Unmanaged);
    let (ready_ok, reason, message) = if unmanaged {
        (
            false,
            "Unmanaged",
            "managementState is unmanaged: the operator does not update the exporter".to_string(),
        )
    } else if let Some(reason) = invalid {
        (
            false,
            reason,
            "the spec is invalid; see the ConfigValid condition".into(),
        )
    } else if !observed.name_conflicts.is_empty() {
        (
            false,
            "NameConflict",
            format!(
                "{}: name taken by an object this SpanSink does not control, left untouched; delete or rename that object, or rename the SpanSink",
                observed.name_conflicts.join(", ")
            ),
        )
    } else if let Some(why) = observed.refused_claim_change {
        (false, "QueueVolumeChangeRefused", why.to_string())
    } else if let Some(first) = observed.secret_problems.first() {
        let all = observed
            .secret_problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        (false, first.reason, all)
    } else if !available {
        (false, "NotAvailable", "no exporter pod is ready yet".into())
    } else if progressing {
        (false, "RollingOut", "the exporter is rolling out".into())
    } else {
        (
            true,
            "Ready",
            "the exporter runs the current pipeline".into(),
        )
    };
    set(condition::READY, ready_ok, reason, message);

    // ServiceMonitor, only when one was asked for.
    if sink.spec.service_monitor.enabled
        && let Desired::Children(children) = desired
    {
        match &children.service_monitor_skipped {
            Some(why) => set(
                condition::SERVICE_MONITOR,
                false,
                "CRDNotInstalled",
                why.clone(),
            ),
            None => set(
                condition::SERVICE_MONITOR,
                true,
                "Created",
                format!("ServiceMonitor {namespace}/{name} scrapes the metrics port"),
            ),
        }
    }

    let config_hash = match desired {
        Desired::Children(children) => Some(children.config_hash.clone()),
        // Untouched children still run the previous config.
        Desired::InvalidPipeline(_) | Desired::Unmanaged => previous.config_hash.clone(),
    };
    let host = service_host(&name, &namespace);
    SpanSinkStatus {
        observed_generation: generation,
        conditions,
        replicas: Some(total),
        ready_replicas: Some(ready),
        selector: Some(selector_string(&name)),
        config_hash,
        endpoints: Some(Endpoints {
            grpc: format!("http://{host}:{GRPC_PORT}"),
            http: format!("http://{host}:{HTTP_PORT}"),
            metrics: format!("http://{host}:{METRICS_PORT}/metrics"),
        }),
    }
}

/// The condition of a type, if present.
pub fn find<'a>(status: &'a SpanSinkStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::reconcile::{OperatorSettings, desired};

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn settings() -> OperatorSettings {
        OperatorSettings {
            exporter_image: "spansink:test".into(),
            service_monitor_available: false,
            pod_defaults: Default::default(),
        }
    }

    fn deployment(replicas: i32, updated: i32, ready: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn seen(workload: &Workload) -> Observed<'_> {
        Observed {
            workload: Some(workload),
            ..Observed::default()
        }
    }

    fn cond<'a>(s: &'a SpanSinkStatus, t: &str) -> (&'a str, &'a str) {
        let c = find(s, t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn ready_when_valid_available_and_rolled_out() {
        let sink = SpanSink::fixture();
        let d = desired(&sink, &settings()).unwrap();
        let s = compute(
            &sink,
            &d,
            &seen(&Workload::Deployment(deployment(2, 2, 2))),
            at(100),
        );
        assert_eq!(cond(&s, "ConfigValid"), ("True", "Valid"));
        assert_eq!(cond(&s, "Available"), ("True", "MinimumReplicasAvailable"));
        assert_eq!(cond(&s, "Progressing"), ("False", "RolloutComplete"));
        assert_eq!(cond(&s, "Ready"), ("True", "Ready"));
        assert_eq!((s.replicas, s.ready_replicas), (Some(2), Some(2)));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=traces,app.kubernetes.io/name=spansink-exporter")
        );
        let e = s.endpoints.unwrap();
        assert_eq!(e.grpc, "http://traces.team-a.svc:4317");
        assert_eq!(e.metrics, "http://traces.team-a.svc:8888/metrics");
        match d {
            Desired::Children(c) => assert_eq!(s.config_hash, Some(c.config_hash)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rolling_out_and_missing_deployment() {
        let sink = SpanSink::fixture();
        let d = desired(&sink, &settings()).unwrap();
        let s = compute(
            &sink,
            &d,
            &seen(&Workload::Deployment(deployment(2, 1, 1))),
            at(100),
        );
        assert_eq!(cond(&s, "Progressing"), ("True", "RollingOut"));
        assert_eq!(cond(&s, "Ready"), ("False", "RollingOut"));
        let s = compute(&sink, &d, &Observed::default(), at(100));
        assert_eq!(cond(&s, "Available"), ("False", "DeploymentMissing"));
        assert_eq!(cond(&s, "Ready"), ("False", "NotAvailable"));
    }

    #[test]
    fn invalid_pipeline_names_the_field_and_keeps_the_running_hash() {
        let mut sink = SpanSink::fixture().with_dangling_fallback();
        sink.status = Some(SpanSinkStatus {
            config_hash: Some("previous".into()),
            ..SpanSinkStatus::default()
        });
        let d = desired(&sink, &settings()).unwrap();
        let s = compute(
            &sink,
            &d,
            &seen(&Workload::Deployment(deployment(1, 1, 1))),
            at(100),
        );
        let c = find(&s, "ConfigValid").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidPipeline")
        );
        assert!(
            c.message.starts_with("spec.pipeline.sinks.main.fallback: "),
            "{}",
            c.message
        );
        assert!(c.message.contains("dead-letter"));
        assert_eq!(cond(&s, "Ready"), ("False", "InvalidPipeline"));
        assert_eq!(s.config_hash.as_deref(), Some("previous"));
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let sink = SpanSink::fixture();
        let d = desired(&sink, &settings()).unwrap();
        let first = compute(
            &sink,
            &d,
            &seen(&Workload::Deployment(deployment(1, 1, 1))),
            at(100),
        );
        let mut again = sink.clone();
        again.status = Some(first);
        let second = compute(
            &again,
            &d,
            &seen(&Workload::Deployment(deployment(1, 1, 1))),
            at(200),
        );
        assert_eq!(
            find(&second, "Ready").unwrap().last_transition_time,
            at(100)
        );
        again.status = Some(second);
        let third = compute(
            &again,
            &d,
            &seen(&Workload::Deployment(deployment(1, 1, 0))),
            at(300),
        );
        assert_eq!(find(&third, "Ready").unwrap().last_transition_time, at(300));
        assert_eq!(
            find(&third, "ConfigValid").unwrap().last_transition_time,
            at(100)
        );
    }

    #[test]
    fn unmanaged_and_skipped_service_monitor_are_explained() {
        let sink = SpanSink::fixture().unmanaged();
        let d = desired(&sink, &settings()).unwrap();
        let s = compute(
            &sink,
            &d,
            &seen(&Workload::Deployment(deployment(1, 1, 1))),
            at(1),
        );
        assert_eq!(cond(&s, "Ready"), ("False", "Unmanaged"));

        let sink = SpanSink::fixture().with_service_monitor();
        let d = desired(&sink, &settings()).unwrap();
        let s = compute(
            &sink,
            &d,
            &seen(&Workload::Deployment(deployment(1, 1, 1))),
            at(1),
        );
        let c = find(&s, "ServiceMonitor").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "CRDNotInstalled")
        );
        assert!(c.message.contains("monitoring.coreos.com"));
    }

    #[test]
    fn a_stateful_set_reports_like_a_deployment_until_its_revision_is_current() {
        use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
        let sink = SpanSink::fixture().with_persistent_queue("1Gi", None);
        let d = desired(&sink, &settings()).unwrap();
        let sts = |current: &str, update: &str, ready: i32| {
            Workload::StatefulSet(StatefulSet {
                metadata: ObjectMeta {
                    generation: Some(2),
                    ..ObjectMeta::default()
                },
                spec: Some(StatefulSetSpec {
                    replicas: Some(2),
                    ..StatefulSetSpec::default()
                }),
                status: Some(StatefulSetStatus {
                    observed_generation: Some(2),
                    replicas: 2,
                    updated_replicas: Some(2),
                    ready_replicas: Some(ready),
                    available_replicas: Some(ready),
                    current_revision: Some(current.into()),
                    update_revision: Some(update.into()),
                    ..StatefulSetStatus::default()
                }),
            })
        };
        let done = sts("r1", "r1", 2);
        let s = compute(&sink, &d, &seen(&done), at(1));
        assert_eq!(cond(&s, "Ready"), ("True", "Ready"));
        assert_eq!((s.replicas, s.ready_replicas), (Some(2), Some(2)));

        let s = compute(&sink, &d, &seen(&sts("r1", "r2", 2)), at(1));
        assert_eq!(cond(&s, "Progressing"), ("True", "RollingOut"));
        assert_eq!(cond(&s, "Ready"), ("False", "RollingOut"));

        let s = compute(&sink, &d, &seen(&sts("r1", "r1", 0)), at(1));
        let available = find(&s, "Available").unwrap();
        assert_eq!(available.reason, "NoReadyReplicas");
        assert!(
            available
                .message
                .contains("kubectl describe statefulset traces")
        );

        let s = compute(&sink, &d, &Observed::default(), at(1));
        let missing = find(&s, "Available").unwrap();
        assert_eq!(missing.reason, "StatefulSetMissing");
        assert_eq!(
            missing.message,
            "StatefulSet team-a/traces does not exist yet"
        );

        // Switching from a Deployment: progressing until the Deployment is gone.
        let switching = Observed {
            workload: Some(&done),
            replacing: Some(WorkloadKind::Deployment),
            ..Observed::default()
        };
        let s = compute(&sink, &d, &switching, at(1));
        let progressing = find(&s, "Progressing").unwrap();
        assert_eq!(progressing.status, "True");
        assert!(
            progressing
                .message
                .starts_with("moving from Deployment to StatefulSet"),
            "{}",
            progressing.message
        );
        assert_eq!(cond(&s, "Ready"), ("False", "RollingOut"));

        // A refused claim change outranks a finished rollout.
        let refused = Observed {
            workload: Some(&done),
            refused_claim_change: Some("claims differ"),
            ..Observed::default()
        };
        let s = compute(&sink, &d, &refused, at(1));
        assert_eq!(cond(&s, "Ready"), ("False", "QueueVolumeChangeRefused"));
        assert_eq!(find(&s, "Ready").unwrap().message, "claims differ");
        assert_eq!(cond(&s, "Available"), ("True", "MinimumReplicasAvailable"));
    }

    #[test]
    fn a_durable_queue_off_the_volume_makes_the_config_invalid() {
        let sink = SpanSink::fixture().with_durable_queue_at("/srv/queue");
        let d = desired(&sink, &settings()).unwrap();
        let s = compute(&sink, &d, &Observed::default(), at(1));
        let c = find(&s, "ConfigValid").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidPipeline")
        );
        assert!(
            c.message
                .starts_with("spec.pipeline.sinks.main.queue.durable.path: /srv/queue is not a directory below /var/lib/spansink"),
            "{}",
            c.message
        );
    }
}
