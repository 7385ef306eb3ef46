//! The pure computation of a SpanSink's status from what reconcile decided and what the
//! Deployment reports. Not the writing of it (the controller patches the status subresource).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::crd::{Endpoints, SpanSink, SpanSinkStatus, condition};
use crate::reconcile::{
    Desired, GRPC_PORT, HTTP_PORT, METRICS_PORT, selector_string, service_host,
};

/// The status a SpanSink should show now.
///
/// `deployment` is the exporter Deployment as the cluster reports it (None if absent or
/// not this SpanSink's); `name_conflicts` names the children (`Kind namespace/name`) whose
/// names are taken by objects this SpanSink does not control; `now` stamps conditions whose
/// status changed (others keep their transition time).
pub fn compute(
    sink: &SpanSink,
    desired: &Desired,
    deployment: Option<&Deployment>,
    name_conflicts: &[String],
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

    // ConfigValid
    let config_valid = match spansink_config::validate(&sink.spec.pipeline) {
        Ok(()) => {
            set(
                condition::CONFIG_VALID,
                true,
                "Valid",
                "spec.pipeline passed the exporter's validation".into(),
            );
            true
        }
        Err(errors) => {
            let message = errors
                .0
                .iter()
                .map(|e| format!("spec.pipeline.{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            set(
                condition::CONFIG_VALID,
                false,
                "InvalidPipeline",
                format!("{message}; the running exporter keeps its previous config"),
            );
            false
        }
    };

    // Available / Progressing, from the Deployment.
    let dep_status = deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let wanted = deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let ready = dep_status.ready_replicas.unwrap_or(0);
    let updated = dep_status.updated_replicas.unwrap_or(0);
    let total = dep_status.replicas.unwrap_or(0);
    let available = deployment.is_some() && dep_status.available_replicas.unwrap_or(0) > 0;
    match deployment {
        None => set(
            condition::AVAILABLE,
            false,
            "DeploymentMissing",
            format!("Deployment {namespace}/{name} does not exist yet"),
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
            format!("0 of {wanted} exporter pods ready; see `kubectl describe deployment {name}`"),
        ),
    }
    let deployment_behind = deployment.is_some_and(|d| {
        dep_status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
    });
    let progressing = deployment.is_some()
        && (deployment_behind || updated < wanted || total > updated || ready < wanted);
    set(
        condition::PROGRESSING,
        progressing,
        if progressing {
            "RollingOut"
        } else {
            "RolloutComplete"
        },
        if progressing {
            format!("{updated} of {wanted} pods updated, {ready} ready")
        } else {
            "all exporter pods run the current template".into()
        },
    );

    // Ready: the one condition a user or a script waits on.
    let unmanaged = matches!(desired, Desired::Unmanaged);
    let (ready_ok, reason, message) = if unmanaged {
        (
            false,
            "Unmanaged",
            "managementState is unmanaged: the operator does not update the exporter".to_string(),
        )
    } else if !config_valid {
        (
            false,
            "InvalidPipeline",
            "spec.pipeline is invalid; see the ConfigValid condition".into(),
        )
    } else if !name_conflicts.is_empty() {
        (
            false,
            "NameConflict",
            format!(
                "{}: name taken by an object this SpanSink does not control, left untouched; delete or rename that object, or rename the SpanSink",
                name_conflicts.join(", ")
            ),
        )
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
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
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

    fn cond<'a>(s: &'a SpanSinkStatus, t: &str) -> (&'a str, &'a str) {
        let c = find(s, t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn ready_when_valid_available_and_rolled_out() {
        let sink = SpanSink::fixture();
        let d = desired(&sink, &settings()).unwrap();
        let s = compute(&sink, &d, Some(&deployment(2, 2, 2)), &[], at(100));
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
        let s = compute(&sink, &d, Some(&deployment(2, 1, 1)), &[], at(100));
        assert_eq!(cond(&s, "Progressing"), ("True", "RollingOut"));
        assert_eq!(cond(&s, "Ready"), ("False", "RollingOut"));
        let s = compute(&sink, &d, None, &[], at(100));
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
        let s = compute(&sink, &d, Some(&deployment(1, 1, 1)), &[], at(100));
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
        let first = compute(&sink, &d, Some(&deployment(1, 1, 1)), &[], at(100));
        let mut again = sink.clone();
        again.status = Some(first);
        let second = compute(&again, &d, Some(&deployment(1, 1, 1)), &[], at(200));
        assert_eq!(
            find(&second, "Ready").unwrap().last_transition_time,
            at(100)
        );
        again.status = Some(second);
        let third = compute(&again, &d, Some(&deployment(1, 1, 0)), &[], at(300));
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
        let s = compute(&sink, &d, Some(&deployment(1, 1, 1)), &[], at(1));
        assert_eq!(cond(&s, "Ready"), ("False", "Unmanaged"));

        let sink = SpanSink::fixture().with_service_monitor();
        let d = desired(&sink, &settings()).unwrap();
        let s = compute(&sink, &d, Some(&deployment(1, 1, 1)), &[], at(1));
        let c = find(&s, "ServiceMonitor").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "CRDNotInstalled")
        );
        assert!(c.message.contains("monitoring.coreos.com"));
    }
}
