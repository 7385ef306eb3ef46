//! The SpanSink CRD: committed copies match the code, the schema is structural (as the API
//! server demands), it rejects what the API server must reject, and the CEL rules hold.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use spansink_operator::crd_yaml;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn schema() -> Value {
    let crd = serde_json::to_value(crd_yaml::spansink_crd().unwrap()).unwrap();
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap()
        .clone()
}

#[test]
fn committed_crds_equal_generated() {
    let generated = crd_yaml::render().unwrap();
    for file in ["crds/spansink.yaml", "charts/spansink/crds/spansink.yaml"] {
        let path = repo_root().join(file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            committed == generated,
            "{file} is out of date; regenerate it with\n  cargo run -q -p spansink-operator --bin crdgen > {file}"
        );
    }
}

#[test]
fn crd_names_subresources_and_columns() {
    let crd = serde_json::to_value(crd_yaml::spansink_crd().unwrap()).unwrap();
    assert_eq!(crd["metadata"]["name"], "spansinks.spansink.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["ssink"]));
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["subresources"]["status"], json!({}));
    assert_eq!(
        v["subresources"]["scale"],
        json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
               "labelSelectorPath": ".status.selector"})
    );
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Ready", "Replicas", "Endpoint", "Age"]);
}

/// The API server's structural-schema rules (apiextensions `structural/validation.go`), the
/// ones a derived schema can break.
fn structural_violations(
    node: &Value,
    path: &str,
    in_value_validation: bool,
    out: &mut Vec<String>,
) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: schema must be an object"));
        return;
    };
    if obj.contains_key("$ref") || obj.contains_key("definitions") || obj.contains_key("$defs") {
        out.push(format!("{path}: references are not allowed"));
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if in_value_validation {
        for key in [
            "type",
            "description",
            "default",
            "additionalProperties",
            "nullable",
        ] {
            if obj.contains_key(key) {
                out.push(format!(
                    "{path}.{key}: must be empty inside anyOf/allOf/oneOf/not"
                ));
            }
        }
        if obj.keys().any(|k| k.starts_with("x-kubernetes-")) {
            out.push(format!(
                "{path}: x-kubernetes-* must be empty inside anyOf/allOf/oneOf/not"
            ));
        }
    } else {
        match obj.get("type") {
            Some(Value::String(_)) => {}
            Some(_) => out.push(format!("{path}.type: must be a single type")),
            None if int_or_string
                || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) => {}
            None => out.push(format!(
                "{path}.type: must not be empty for specified object fields"
            )),
        }
        if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
            out.push(format!(
                "{path}: properties and additionalProperties are mutually exclusive"
            ));
        }
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, sub) in props {
            structural_violations(sub, &format!("{path}.{name}"), in_value_validation, out);
        }
    }
    match obj.get("additionalProperties") {
        Some(sub @ Value::Object(_)) => {
            structural_violations(sub, &format!("{path}[*]"), in_value_validation, out)
        }
        Some(Value::Bool(_)) | None => {}
        Some(_) => out.push(format!(
            "{path}.additionalProperties: must be a schema or a boolean"
        )),
    }
    match obj.get("items") {
        Some(sub @ Value::Object(_)) => {
            structural_violations(sub, &format!("{path}[]"), in_value_validation, out)
        }
        None => {
            if obj.get("type") == Some(&json!("array")) {
                out.push(format!("{path}.items: must be set for arrays"));
            }
        }
        Some(_) => out.push(format!("{path}.items: must be a single schema")),
    }
    let int_or_string_branches = json!([{"type": "integer"}, {"type": "string"}]);
    for key in ["anyOf", "allOf", "oneOf"] {
        if let Some(Value::Array(branches)) = obj.get(key) {
            // The one exception the API server makes: the exact int-or-string pattern.
            if key == "anyOf" && int_or_string && obj.get(key) == Some(&int_or_string_branches) {
                continue;
            }
            for (i, sub) in branches.iter().enumerate() {
                structural_violations(sub, &format!("{path}.{key}[{i}]"), true, out);
            }
        }
    }
    if let Some(sub) = obj.get("not") {
        structural_violations(sub, &format!("{path}.not"), true, out);
    }
}

#[test]
fn schema_is_structural() {
    let schema = schema();
    let mut violations = Vec::new();
    structural_violations(&schema, "openAPIV3Schema", false, &mut violations);
    assert!(
        violations.is_empty(),
        "non-structural schema:\n{}",
        violations.join("\n")
    );
    // The sink map is a map (additionalProperties), not a fixed set of fields.
    let sinks = schema
        .pointer("/properties/spec/properties/pipeline/properties/sinks")
        .unwrap();
    assert_eq!(sinks["type"], "object");
    assert!(sinks["additionalProperties"]["properties"]["file"].is_object());
}

#[test]
fn structural_checker_catches_what_kube_would_get_wrong() {
    let mut v = Vec::new();
    structural_violations(
        &json!({"type": "object", "properties": {
            "a": {"description": "no type"},
            "b": {"anyOf": [{"type": "integer"}, {"type": "string", "description": "x"}]},
            "c": {"$ref": "#/$defs/C"}
        }}),
        "root",
        false,
        &mut v,
    );
    assert_eq!(v.len(), 7, "{v:?}");
}

#[test]
fn byte_sizes_are_enforced_by_the_schema() {
    let schema = schema();
    let size = schema
        .pointer(
            "/properties/spec/properties/pipeline/properties/receivers/properties/max_request_size",
        )
        .unwrap();
    assert_eq!(size["x-kubernetes-int-or-string"], true);
    assert_eq!(
        size["anyOf"],
        json!([{"type": "integer"}, {"type": "string"}])
    );
    assert!(
        size["pattern"].is_string() && size["minimum"].is_number(),
        "{size}"
    );
}

#[test]
fn without_the_fix_kube_alone_would_admit_any_size() {
    // Why `enforce_int_or_string_validations` exists: kube's own output is structural but
    // its size branches check nothing. If this starts failing, kube fixed it; drop the fix.
    use kube::CustomResourceExt;
    let raw = serde_json::to_value(spansink_operator::crd::SpanSink::crd()).unwrap();
    let raw = raw
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap();
    let mut violations = Vec::new();
    structural_violations(raw, "openAPIV3Schema", false, &mut violations);
    assert!(violations.is_empty(), "{violations:?}");
    let validator = jsonschema::validator_for(raw).unwrap();
    let spec = json!({"pipeline": {"sinks": {"m": {"blackhole": {}, "batch": {"max_bytes": "4 parsecs"}}}}});
    assert!(validator.is_valid(&spansink(spec)));
}

fn spansink(spec: Value) -> Value {
    json!({"apiVersion": "spansink.dev/v1alpha1", "kind": "SpanSink",
           "metadata": {"name": "traces", "namespace": "team-a"}, "spec": spec})
}

fn file_pipeline() -> Value {
    json!({"sinks": {"main": {"file": {"path": "/var/lib/spansink/spans.jsonl"}}}})
}

#[test]
fn schema_rejects_what_the_api_server_must_reject() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    for ok in [
        spansink(json!({"pipeline": file_pipeline(), "replicas": 2})),
        spansink(
            json!({"pipeline": file_pipeline(), "imagePullPolicy": "Never",
                        "imagePullSecrets": [{"name": "regcred"}]}),
        ),
        spansink(json!({"pipeline": file_pipeline(), "imagePullSecrets": []})),
    ] {
        assert!(
            validator.is_valid(&ok),
            "{:?}",
            validator
                .iter_errors(&ok)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    }

    let bad = [
        ("no pipeline", json!({"replicas": 1})),
        (
            "negative replicas",
            json!({"pipeline": file_pipeline(), "replicas": -1}),
        ),
        (
            "pipeline without sinks",
            json!({"pipeline": {"receivers": {}}}),
        ),
        (
            "bad duration",
            json!({"pipeline": {"sinks": {"m": {"blackhole": {}, "timeout": "soon"}}}}),
        ),
        (
            "bad size",
            json!({"pipeline": {"sinks": {"m": {"blackhole": {}, "batch": {"max_bytes": "4 parsecs"}}}}}),
        ),
        (
            "negative size",
            json!({"pipeline": {"sinks": {"m": {"blackhole": {}, "batch": {"max_bytes": -4}}}}}),
        ),
        (
            "unknown enum",
            json!({"pipeline": {"sinks": {"m": {"blackhole": {}, "queue": {"when_full": "explode"}}}}}),
        ),
        (
            "bad management state",
            json!({"pipeline": file_pipeline(), "managementState": "sometimes"}),
        ),
        (
            "bad service type",
            json!({"pipeline": file_pipeline(), "service": {"type": "Ingress"}}),
        ),
        (
            "maxReplicas missing",
            json!({"pipeline": file_pipeline(), "autoscaling": {"minReplicas": 1}}),
        ),
        (
            "bad image pull policy",
            json!({"pipeline": file_pipeline(), "imagePullPolicy": "Sometimes"}),
        ),
        (
            "image pull secret without name",
            json!({"pipeline": file_pipeline(), "imagePullSecrets": [{}]}),
        ),
        (
            "bad interval",
            json!({"pipeline": file_pipeline(), "serviceMonitor": {"enabled": true, "interval": "often"}}),
        ),
    ];
    for (what, spec) in bad {
        assert!(!validator.is_valid(&spansink(spec)), "schema admits {what}");
    }
}

fn cel(spec: Value) -> Result<(), String> {
    kube_cel::validate(&schema(), &spansink(spec), None).map_err(|errors| {
        errors
            .as_slice()
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[test]
fn cel_rules_are_present_and_hold() {
    let text = serde_json::to_string(&schema()).unwrap();
    assert!(text.contains("!(has(self.replicas) && has(self.autoscaling))"));

    assert!(cel(json!({"pipeline": file_pipeline(), "replicas": 3})).is_ok());
    assert!(cel(json!({"pipeline": file_pipeline(), "autoscaling": {"maxReplicas": 5}})).is_ok());
    let both =
        cel(json!({"pipeline": file_pipeline(), "replicas": 3, "autoscaling": {"maxReplicas": 5}}));
    assert!(
        both.unwrap_err()
            .contains("either spec.replicas or spec.autoscaling")
    );
    let inverted = cel(
        json!({"pipeline": file_pipeline(), "autoscaling": {"minReplicas": 6, "maxReplicas": 5}}),
    );
    assert!(inverted.unwrap_err().contains("minReplicas"));
    let pdb_both = cel(json!({"pipeline": file_pipeline(),
        "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": "50%"}}));
    assert!(pdb_both.unwrap_err().contains("exactly one"));
    assert!(
        cel(json!({"pipeline": file_pipeline(), "podDisruptionBudget": {"maxUnavailable": 1}}))
            .is_ok()
    );
    let volume_none = cel(json!({"pipeline": file_pipeline(), "queueVolume": {}}));
    assert!(volume_none.unwrap_err().contains("queueVolume"));
    let persistent = json!({"size": "10Gi", "storageClassName": "fast"});
    assert!(
        cel(json!({"pipeline": file_pipeline(), "queueVolume": {"persistent": persistent}}))
            .is_ok()
    );
    assert!(cel(json!({"pipeline": file_pipeline(), "queueVolume": {"emptyDir": {}}})).is_ok());
    let two = cel(json!({"pipeline": file_pipeline(),
        "queueVolume": {"emptyDir": {}, "persistent": persistent}}));
    assert!(two.unwrap_err().contains(
        "exactly one of queueVolume.emptyDir, queueVolume.ephemeral and queueVolume.persistent"
    ));
    let three = cel(json!({"pipeline": file_pipeline(),
        "queueVolume": {"emptyDir": {}, "ephemeral": {"size": "1Gi"}, "persistent": persistent}}));
    assert!(three.is_err());
}

#[test]
fn claim_sizes_are_positive_quantities_as_the_operator_reads_them() {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use spansink_operator::quantity::storage_bytes;
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let with_size = |size: Value| {
        spansink(json!({"pipeline": file_pipeline(),
            "queueVolume": {"persistent": {"size": size, "retentionPolicy": {"whenScaled": "Delete"}}}}))
    };
    for ok in [
        "10Gi", "1024Mi", "500M", "1e9", "1E+3", "1.5Gi", "0.5Ki", "1", "7Ei",
    ] {
        assert!(
            validator.is_valid(&with_size(json!(ok))),
            "schema refuses {ok}"
        );
        assert!(
            storage_bytes(&Quantity(ok.into())).is_ok(),
            "operator refuses {ok}"
        );
    }
    assert!(validator.is_valid(&with_size(json!(1_073_741_824))));
    for bad in [
        "0", "0Gi", "0.0", "-1Gi", "+1Gi", "10Gb", "10 Gi", "ten", "100m", "1e-3", "",
    ] {
        assert!(
            !validator.is_valid(&with_size(json!(bad))),
            "schema admits {bad:?}"
        );
        assert!(
            storage_bytes(&Quantity(bad.into())).is_err(),
            "operator admits {bad:?}"
        );
    }
    for bad in [json!(0), json!(-5)] {
        assert!(
            !validator.is_valid(&with_size(bad.clone())),
            "schema admits {bad}"
        );
    }
    // Same rule for the ephemeral volume's size; the retention policy takes two values.
    let ephemeral =
        spansink(json!({"pipeline": file_pipeline(), "queueVolume": {"ephemeral": {"size": "0"}}}));
    assert!(!validator.is_valid(&ephemeral));
    let retention = spansink(json!({"pipeline": file_pipeline(),
        "queueVolume": {"persistent": {"size": "1Gi", "retentionPolicy": {"whenDeleted": "Archive"}}}}));
    assert!(!validator.is_valid(&retention));
}

#[test]
fn every_spec_field_is_documented() {
    fn walk(node: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(Value::Object(props)) = node.get("properties") {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                if sub
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(p.clone());
                }
                walk(sub, &p, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
        if let Some(sub @ Value::Object(_)) = node.get("additionalProperties") {
            walk(sub, &format!("{path}[*]"), missing);
        }
    }
    let schema = schema();
    let mut missing = Vec::new();
    walk(&schema["properties"]["spec"], "spec", &mut missing);
    walk(&schema["properties"]["status"], "status", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description (kubectl explain shows nothing):\n{}",
        missing.join("\n")
    );
}

#[test]
fn examples_are_admitted_by_the_schema_and_valid_pipelines() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("examples/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "examples/k8s has the file, otlp, kafka and s3 examples: {files:?}"
    );
    for path in files {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let object: Value = serde_yaml::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&object)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{file}: {errors:?}");
        assert!(
            kube_cel::validate(&schema(), &object, None).is_ok(),
            "{file}: CEL"
        );
        let sink: spansink_operator::crd::SpanSink = serde_json::from_value(object).unwrap();
        spansink_config::validate(&sink.spec.pipeline).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// The API server stores `null` for a nullable field; for a size the exporter requires
/// (not an `Option`), that object could not be deserialized and would break the
/// operator's watch. Only optional int-or-string fields may be nullable.
#[test]
fn required_sizes_are_not_nullable() {
    fn walk(node: &Value, path: &str, nullable: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                    && map.get("nullable") == Some(&Value::Bool(true))
                {
                    nullable.push(path.to_string());
                }
                for (key, child) in map {
                    let next = match key.as_str() {
                        "properties" => path.to_string(),
                        "additionalProperties" => format!("{path}[*]"),
                        _ if path.ends_with('.') || path.is_empty() => format!("{path}{key}"),
                        _ => format!("{path}.{key}"),
                    };
                    walk(child, &next, nullable);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, path, nullable)),
            _ => {}
        }
    }
    let mut nullable = Vec::new();
    walk(
        &schema()["properties"]["spec"]["properties"]["pipeline"],
        "pipeline",
        &mut nullable,
    );
    assert_eq!(
        nullable,
        vec![
            "pipeline.sinks[*].file.rotation.max_size",
            "pipeline.sinks[*].transform.rules.items.max_bytes",
        ],
        "nullable int-or-string fields"
    );
}

/// Every `description` in the CRD, with where it sits.
fn descriptions(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("description", Value::String(text)) => out.push((path.into(), text.clone())),
                    ("default" | "example" | "enum", _) => {}
                    (_, value) => descriptions(value, &format!("{path}.{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                descriptions(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn descriptions_have_no_line_breaks_mid_sentence() {
    // `kubectl explain` rewraps descriptions itself: a doc comment's hard wrap would show
    // as a break in the middle of a sentence ("in the\nsame format").
    let crd = serde_json::to_value(crd_yaml::spansink_crd().unwrap()).unwrap();
    let mut all = Vec::new();
    descriptions(&crd, "", &mut all);
    assert!(all.len() > 100, "the walk found {} descriptions", all.len());
    let broken: Vec<String> = all
        .iter()
        .filter(|(_, text)| {
            // A single line break followed by a word that continues the sentence (lowercase,
            // a code span, an opening parenthesis). Paragraph breaks and list items are fine.
            text.as_bytes().windows(3).any(|w| {
                w[0] != b'\n'
                    && w[1] == b'\n'
                    && (w[2].is_ascii_lowercase() || w[2] == b'`' || w[2] == b'(')
            })
        })
        .map(|(path, text)| format!("{path}: {text:?}"))
        .collect();
    assert!(
        broken.is_empty(),
        "descriptions broken mid-sentence:\n{}",
        broken.join("\n")
    );
}
