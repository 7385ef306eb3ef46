//! Reading Bulk API answers: the HTTP status of the whole request and the status of each
//! item, each classified as written, worth re-sending, or refused for good.
//! Not the sending (`client`) nor the retry rounds (`mod.rs`).

use reqwest::StatusCode;
use serde::Deserialize;

use crate::sinks::SinkError;

/// `filter_path` asked of the cluster: only what is classified here, so a large batch's
/// answer stays small (items keep their order, so no `_id` is needed to match them).
pub const FILTER_PATH: &str =
    "items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by.type";

/// What to do with a whole bulk request after its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// 200: read the items.
    Items,
    /// 413: the body is too large for the cluster (`http.max_content_length`); send the
    /// items in smaller requests.
    TooLarge,
    /// Send every item of the request again (429, 5xx, 408).
    Retry(SinkError),
    /// Nothing in this request can succeed (401/403, other 4xx).
    Fail(SinkError),
}

/// Classifies the HTTP status of a bulk request; the start of `body` goes into the
/// message of a failure (it is only read then: a 200 body can be large).
pub fn classify_request(status: StatusCode, body: &[u8]) -> RequestOutcome {
    let message = || {
        let snippet: String = String::from_utf8_lossy(&body[..body.len().min(300)]).into();
        format!("bulk request answered {status}: {snippet}")
    };
    match status.as_u16() {
        200..=299 => RequestOutcome::Items,
        413 => RequestOutcome::TooLarge,
        401 | 403 => RequestOutcome::Fail(SinkError::permanent(
            "auth",
            format!(
                "{}; check username/password_env or api_key_env and the user's index privileges",
                message()
            ),
        )),
        429 => RequestOutcome::Retry(SinkError::transient("throttled", message())),
        408 | 500..=599 => RequestOutcome::Retry(SinkError::transient("unavailable", message())),
        _ => RequestOutcome::Fail(SinkError::permanent("rejected", message())),
    }
}

/// The outcome of one item of a bulk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Written,
    /// Worth sending again (throttled, shard unavailable, ...).
    Retry(ItemError),
    /// Refused for good; `reason` is the metric label (`mapping`, `auth`, `rejected`).
    Fail {
        reason: &'static str,
        error: ItemError,
    },
}

/// What the cluster said about one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    pub status: u16,
    /// Elasticsearch's error type, e.g. `mapper_parsing_exception`.
    pub kind: String,
    pub reason: String,
}

/// Error types that mean the document does not fit the index's mapping (or is not a
/// document the cluster can parse): the same document fails every time.
const MAPPING_ERRORS: &[&str] = &[
    "mapper_parsing_exception",
    "document_parsing_exception",
    "strict_dynamic_mapping_exception",
    "illegal_argument_exception",
    "json_parse_exception",
    "x_content_parse_exception",
];

/// Classifies one item. `create`: the operation was `create` (data streams), where a
/// version conflict means a previous attempt already wrote this document.
pub fn classify_item(create: bool, status: u16, error: Option<ItemError>) -> ItemOutcome {
    let error = || {
        error.clone().unwrap_or(ItemError {
            status,
            kind: String::new(),
            reason: String::new(),
        })
    };
    match status {
        200..=299 => ItemOutcome::Written,
        409 if create => ItemOutcome::Written,
        // Disk watermark blocks (`cluster_block_exception`, 403 before Elasticsearch 8,
        // 429 since) lift once space is freed: worth waiting for, unlike a missing
        // privilege.
        403 if error().kind == "cluster_block_exception" => ItemOutcome::Retry(error()),
        // 409 on `index`: a concurrent write to the same `_id` won the race; ours is the
        // same document, but re-sending settles it.
        408 | 409 | 429 | 500..=599 => ItemOutcome::Retry(error()),
        401 | 403 => ItemOutcome::Fail {
            reason: "auth",
            error: error(),
        },
        400 if MAPPING_ERRORS.contains(&error().kind.as_str()) => ItemOutcome::Fail {
            reason: "mapping",
            error: error(),
        },
        _ => ItemOutcome::Fail {
            reason: "rejected",
            error: error(),
        },
    }
}

/// Why an answer could not be read. Permanent: something other than Elasticsearch or
/// OpenSearch answered (a proxy page, another service on the port).
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error(
        "the bulk answer is not the Bulk API's JSON ({0}); is the endpoint Elasticsearch/OpenSearch?"
    )]
    NotBulkJson(#[from] serde_json::Error),
    #[error("the bulk answer has {got} items for {sent} sent documents")]
    ItemCount { got: usize, sent: usize },
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<ItemEntry>,
}

/// `{"index": {...}}` or `{"create": {...}}`: one key, the operation.
#[derive(Deserialize)]
struct ItemEntry {
    #[serde(alias = "index", alias = "create", alias = "update", alias = "delete")]
    result: ItemResult,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The outcome of each item of a 200 answer, in request order. `sent`: how many items
/// the request held.
pub fn parse_items(
    body: &[u8],
    create: bool,
    sent: usize,
) -> Result<Vec<ItemOutcome>, ResponseError> {
    let response: BulkResponse = serde_json::from_slice(body)?;
    // Every item is checked even when `errors` is false: an answer without one status
    // per document (say `{}` from something that is not a cluster) must not count as
    // written.
    if response.items.len() != sent {
        return Err(ResponseError::ItemCount {
            got: response.items.len(),
            sent,
        });
    }
    Ok(response
        .items
        .into_iter()
        .map(|entry| {
            let ItemResult { status, error } = entry.result;
            classify_item(create, status, error.map(|e| item_error(status, &e)))
        })
        .collect())
}

/// The type and reason of an item's `error` (an object; very old versions sent a string).
fn item_error(status: u16, error: &serde_json::Value) -> ItemError {
    match error {
        serde_json::Value::String(text) => ItemError {
            status,
            kind: String::new(),
            reason: text.clone(),
        },
        other => {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let mut reason = text(&other["reason"]);
            let cause = text(&other["caused_by"]["type"]);
            if !cause.is_empty() {
                reason = format!("{reason} (caused by {cause})");
            }
            ItemError {
                status,
                kind: text(&other["type"]),
                reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, kind: &str) -> Option<ItemError> {
        Some(ItemError {
            status,
            kind: kind.into(),
            reason: "r".into(),
        })
    }

    #[test]
    fn request_statuses_are_classified() {
        assert_eq!(classify_request(StatusCode::OK, b""), RequestOutcome::Items);
        assert_eq!(
            classify_request(StatusCode::PAYLOAD_TOO_LARGE, b""),
            RequestOutcome::TooLarge
        );
        for (status, transient, reason) in [
            (401, false, "auth"),
            (403, false, "auth"),
            (400, false, "rejected"),
            (404, false, "rejected"),
            (429, true, "throttled"),
            (408, true, "unavailable"),
            (502, true, "unavailable"),
            (503, true, "unavailable"),
        ] {
            let outcome = classify_request(StatusCode::from_u16(status).unwrap(), b"{}");
            let error = match outcome {
                RequestOutcome::Retry(e) | RequestOutcome::Fail(e) => e,
                other => panic!("{status}: {other:?}"),
            };
            assert_eq!(
                (error.is_transient(), error.reason()),
                (transient, reason),
                "{status}"
            );
        }
    }

    #[test]
    fn item_statuses_are_classified() {
        assert_eq!(classify_item(false, 201, None), ItemOutcome::Written);
        assert_eq!(classify_item(false, 200, None), ItemOutcome::Written);
        assert_eq!(
            classify_item(true, 409, err(409, "version_conflict_engine_exception")),
            ItemOutcome::Written
        );
        assert!(matches!(
            classify_item(false, 409, err(409, "version_conflict_engine_exception")),
            ItemOutcome::Retry(_)
        ));
        for status in [429, 500, 503] {
            assert!(
                matches!(
                    classify_item(
                        false,
                        status,
                        err(status, "es_rejected_execution_exception")
                    ),
                    ItemOutcome::Retry(_)
                ),
                "{status}"
            );
        }
        assert!(matches!(
            classify_item(false, 403, err(403, "cluster_block_exception")),
            ItemOutcome::Retry(_)
        ));
        for kind in ["mapper_parsing_exception", "illegal_argument_exception"] {
            assert!(
                matches!(
                    classify_item(false, 400, err(400, kind)),
                    ItemOutcome::Fail {
                        reason: "mapping",
                        ..
                    }
                ),
                "{kind}"
            );
        }
        assert!(matches!(
            classify_item(false, 403, err(403, "security_exception")),
            ItemOutcome::Fail { reason: "auth", .. }
        ));
        assert!(matches!(
            classify_item(false, 404, err(404, "index_not_found_exception")),
            ItemOutcome::Fail {
                reason: "rejected",
                ..
            }
        ));
    }

    #[test]
    fn items_are_read_in_order_with_their_errors() {
        let body = br#"{"errors":true,"items":[{"index":{"status":201}},{"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},{"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse","caused_by":{"type":"json_parse_exception"}}}}]}"#;
        let items = parse_items(body, false, 3).unwrap();
        assert_eq!(items[0], ItemOutcome::Written);
        assert_eq!(
            items[1],
            ItemOutcome::Retry(ItemError {
                status: 429,
                kind: "es_rejected_execution_exception".into(),
                reason: "queue full".into()
            })
        );
        assert_eq!(
            items[2],
            ItemOutcome::Fail {
                reason: "mapping",
                error: ItemError {
                    status: 400,
                    kind: "mapper_parsing_exception".into(),
                    reason: "failed to parse (caused by json_parse_exception)".into()
                }
            }
        );
        assert_eq!(
            parse_items(
                br#"{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":409}}]}"#,
                true,
                2
            )
            .unwrap(),
            vec![ItemOutcome::Written; 2]
        );
        assert!(matches!(
            parse_items(br#"{"errors":false}"#, false, 2),
            Err(ResponseError::ItemCount { got: 0, sent: 2 })
        ));
        assert!(matches!(
            parse_items(br#"{"errors":true,"items":[]}"#, false, 2),
            Err(ResponseError::ItemCount { got: 0, sent: 2 })
        ));
        assert!(matches!(
            parse_items(b"<html>proxy</html>", false, 1),
            Err(ResponseError::NotBulkJson(_))
        ));
    }
}
