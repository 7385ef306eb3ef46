//! What kube-apiserver does to a Secret on every write, so tests store Secrets the way
//! `kubectl apply` would and read back what a real server returns. Not the other kinds.

use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::Kind;

/// Whether `kind` is the core group's Secrets.
fn is_secret(kind: &Kind) -> bool {
    kind.group.is_empty() && kind.version == "v1" && kind.plural == "secrets"
}

/// `stringData` is folded into `data` (base64; its keys win over the same keys of `data`)
/// and never stored; `type` defaults to `Opaque`.
pub(super) fn normalize(kind: &Kind, object: &mut Value) {
    if !is_secret(kind) {
        return;
    }
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(string_data)) = fields.remove("stringData") {
        let data = fields.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (key, value) in string_data {
            // ByteString serializes as the API's base64.
            let bytes = ByteString(value.as_str().unwrap_or_default().as_bytes().to_vec());
            data[key] = serde_json::to_value(bytes).unwrap_or_default();
        }
    }
    fields.entry("type").or_insert_with(|| json!("Opaque"));
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};

    use super::super::FakeApiServer;
    use super::*;

    #[tokio::test]
    async fn secrets_read_back_as_from_the_real_server() {
        let server = FakeApiServer::default();
        let api: Api<Secret> = Api::namespaced(server.client(), "a");
        // Missing: a 404 Status with reason NotFound, for the whole object and its metadata.
        let err = api.get("tls").await.unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
        assert_eq!(status.message, "secrets \"tls\" not found");
        assert!(api.get_opt("tls").await.unwrap().is_none());
        assert!(api.get_metadata_opt("tls").await.unwrap().is_none());

        let created: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tls"}, "stringData": {"tls.crt": "cert"}}))
        .unwrap();
        api.create(&PostParams::default(), &created).await.unwrap();
        let read = api.get("tls").await.unwrap();
        assert_eq!(read.type_.as_deref(), Some("Opaque"));
        assert!(read.string_data.is_none(), "stringData is write-only");
        assert_eq!(read.data.unwrap()["tls.crt"].0, b"cert");
        // Metadata only: no data comes back.
        let meta = api.get_metadata("tls").await.unwrap();
        assert_eq!(meta.metadata.name.as_deref(), Some("tls"));
        let raw = serde_json::to_value(&meta).unwrap();
        assert!(raw.get("data").is_none(), "{raw}");
    }

    #[test]
    fn string_data_is_folded_into_data_and_type_defaults() {
        let secrets = Kind {
            group: String::new(),
            version: "v1".into(),
            plural: "secrets".into(),
        };
        let mut secret = json!({"metadata": {"name": "tls"}, "data": {"a": "eA==", "b": "eA=="},
            "stringData": {"b": "token"}});
        normalize(&secrets, &mut secret);
        assert_eq!(
            secret,
            json!({"metadata": {"name": "tls"}, "data": {"a": "eA==", "b": "dG9rZW4="}, "type": "Opaque"})
        );
        let config_maps = Kind {
            plural: "configmaps".into(),
            ..secrets
        };
        let mut cm = json!({"stringData": {"b": "x"}});
        normalize(&config_maps, &mut cm);
        assert_eq!(cm, json!({"stringData": {"b": "x"}}));
    }
}
