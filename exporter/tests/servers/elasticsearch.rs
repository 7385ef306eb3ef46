//! Elasticsearch/OpenSearch for the sink tests: the osmem-server emulator (PyPI
//! `osmem-server`, an in-memory OpenSearch API) started as a process, and a Bulk-API
//! double in this process that checks each request as the documented API reads it and
//! answers with injected per-item errors. No real cluster can be installed here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{ServerProcess, free_port, wait_listening};

// ---------------------------------------------------------------------------------------
// osmem-server

/// The osmem-server binary: `OSMEM_SERVER_BIN`, else the one the PyPI wheel bundles in
/// the test virtualenv (`SPANSINK_VENV`, created by tests/run-all.sh).
pub fn osmem_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("OSMEM_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let venv = std::env::var("SPANSINK_VENV").unwrap_or_else(|_| {
        panic!("SPANSINK_VENV is not set: point it at a virtualenv with osmem-server installed (tests/run-all.sh creates it)")
    });
    let on_path = PathBuf::from(&venv).join("bin/osmem-server");
    if on_path.is_file() {
        return on_path;
    }
    // The wheel ships the binary inside the package, not in bin/.
    let lib = PathBuf::from(&venv).join("lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/osmem_server/bin/osmem-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "osmem-server not found in {venv}: install it ({venv}/bin/pip install osmem-server) or set OSMEM_SERVER_BIN"
            )
        })
}

/// A running osmem-server on a loopback port, killed on drop.
pub struct Osmem {
    pub port: u16,
    process: ServerProcess,
    http: reqwest::Client,
}

impl Osmem {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts on `port` (a test that starts the server late picks the port first).
    pub fn start_on(port: u16) -> Self {
        let mut command = Command::new(osmem_binary());
        command
            .args(["-addr", &format!("127.0.0.1:{port}"), "-no-stdin-watch"])
            .args(["-parent-pid", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut process = ServerProcess::spawn("osmem-server", &mut command);
        wait_listening("osmem-server", port, Duration::from_secs(20));
        process.assert_running();
        Self {
            port,
            process,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A request with a JSON body; the answer's status and text.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("osmem-server answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("osmem-server body"))
    }

    /// Creates `index` with these mappings (as an index template would).
    pub async fn create_index(&self, index: &str, mappings: &str) {
        let (status, body) = self
            .request(
                reqwest::Method::PUT,
                &format!("/{index}"),
                Some(&format!("{{\"mappings\":{mappings}}}")),
            )
            .await;
        assert_eq!(status, 200, "create index {index}: {body}");
    }

    /// Every document of `index` (refreshed first) as `(_id, raw _source text)`, sorted
    /// by id.
    pub async fn documents(&self, index: &str) -> Vec<(String, String)> {
        let (status, body) = self
            .request(reqwest::Method::POST, &format!("/{index}/_refresh"), None)
            .await;
        assert_eq!(status, 200, "refresh {index}: {body}");
        let (status, body) = self
            .request(
                reqwest::Method::POST,
                &format!("/{index}/_search"),
                Some(r#"{"size":10000,"query":{"match_all":{}}}"#),
            )
            .await;
        assert_eq!(status, 200, "search {index}: {body}");
        parse_hits(&body)
    }

    /// The raw `_source` of one document, `None` when it does not exist.
    pub async fn document(&self, index: &str, id: &str) -> Option<String> {
        let (status, body) = self
            .request(reqwest::Method::GET, &format!("/{index}/_doc/{id}"), None)
            .await;
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "get {index}/{id}: {body}");
        #[derive(serde::Deserialize)]
        struct Doc<'a> {
            #[serde(borrow)]
            _source: &'a serde_json::value::RawValue,
        }
        let doc: Doc<'_> = serde_json::from_str(&body).expect("a _doc answer");
        Some(doc._source.get().to_string())
    }

    /// Number of documents in `index` (refreshed first); 0 when it does not exist.
    pub async fn count(&self, index: &str) -> usize {
        let (status, _) = self
            .request(reqwest::Method::POST, &format!("/{index}/_refresh"), None)
            .await;
        if status == 404 {
            return 0;
        }
        let (status, body) = self
            .request(reqwest::Method::GET, &format!("/{index}/_count"), None)
            .await;
        assert_eq!(status, 200, "count {index}: {body}");
        let value: Value = serde_json::from_str(&body).expect("a _count answer");
        value["count"].as_u64().expect("count") as usize
    }
}

/// `(_id, raw _source)` of each hit of a `_search` answer, sorted by id.
fn parse_hits(body: &str) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Search<'a> {
        #[serde(borrow)]
        hits: Hits<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Hits<'a> {
        #[serde(borrow)]
        hits: Vec<Hit<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Hit<'a> {
        _id: String,
        #[serde(borrow)]
        _source: &'a serde_json::value::RawValue,
    }
    let search: Search<'_> = serde_json::from_str(body).expect("a _search answer");
    let mut hits: Vec<_> = search
        .hits
        .hits
        .into_iter()
        .map(|h| (h._id, h._source.get().to_string()))
        .collect();
    hits.sort();
    hits
}

// ---------------------------------------------------------------------------------------
// Bulk-API double

/// One bulk request as the double received it.
#[derive(Debug, Clone)]
pub struct BulkRequest {
    /// `_id` of each item, in order.
    pub ids: Vec<String>,
    /// Operation of each item (`index`, `create`).
    pub operations: Vec<String>,
    /// Raw query string (`filter_path=...&pipeline=...`).
    pub query: String,
    pub content_type: String,
    pub gzip: bool,
    pub authorization: Option<String>,
    /// Body size before decompression.
    pub wire_bytes: usize,
    /// Body size after decompression.
    pub ndjson_bytes: usize,
}

/// What the double holds and what it was told to answer.
#[derive(Default)]
pub struct DoubleState {
    /// `(index, _id)` -> raw document text.
    pub documents: BTreeMap<(String, String), String>,
    pub requests: Vec<BulkRequest>,
    /// Ways a request broke the documented NDJSON format; a test asserts it is empty.
    pub violations: Vec<String>,
    /// Per `_id`: the next answers for that item (status, error type), used up in order.
    item_failures: HashMap<String, VecDeque<(u16, String)>>,
    /// Whole-request answers used up in order before items are looked at.
    request_statuses: VecDeque<u16>,
    /// Answer every request with this status (e.g. 401).
    always_status: Option<u16>,
    /// Answer 413 to bodies (decompressed) larger than this.
    max_content_length: Option<usize>,
    /// When set, requests must carry exactly this `Authorization` header (else 401).
    required_authorization: Option<String>,
}

/// The double: an axum server on a free loopback port.
pub struct BulkDouble {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<DoubleState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for BulkDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl BulkDouble {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(DoubleState::default()));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the bulk double");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut DoubleState) -> T) -> T {
        f(&mut self.state.lock().expect("double state"))
    }

    /// The next `times` answers for item `id` are `status` with error `kind`.
    pub fn fail_item(&self, id: &str, status: u16, kind: &str, times: usize) {
        self.with(|s| {
            let queue = s.item_failures.entry(id.to_string()).or_default();
            queue.extend(std::iter::repeat_n((status, kind.to_string()), times));
        });
    }

    /// The next whole requests are answered with these statuses.
    pub fn answer_requests(&self, statuses: &[u16]) {
        self.with(|s| s.request_statuses.extend(statuses));
    }

    pub fn always_answer(&self, status: u16) {
        self.with(|s| s.always_status = Some(status));
    }

    pub fn max_content_length(&self, bytes: usize) {
        self.with(|s| s.max_content_length = Some(bytes));
    }

    pub fn require_authorization(&self, value: &str) {
        self.with(|s| s.required_authorization = Some(value.to_string()));
    }

    pub fn requests(&self) -> Vec<BulkRequest> {
        self.with(|s| s.requests.clone())
    }

    pub fn documents(&self) -> BTreeMap<(String, String), String> {
        self.with(|s| s.documents.clone())
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|s| s.violations.clone())
    }
}

fn json_response(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn error_response(status: u16, kind: &str, reason: &str) -> Response {
    json_response(
        status,
        serde_json::json!({"error": {"type": kind, "reason": reason}, "status": status})
            .to_string(),
    )
}

async fn handle(
    State(state): State<Arc<Mutex<DoubleState>>>,
    uri: axum::http::Uri,
    method: axum::http::Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().expect("double state");
    let header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let gzip = header(header::CONTENT_ENCODING).as_deref() == Some("gzip");
    let authorization = header(header::AUTHORIZATION);
    if method != axum::http::Method::POST || uri.path() != "/_bulk" {
        s.violations
            .push(format!("{method} {} is not POST /_bulk", uri.path()));
        return error_response(404, "not_found", "only POST /_bulk here");
    }
    // The Bulk API takes NDJSON; Elasticsearch also tolerates application/json, but the
    // documented type is what a client must send.
    if content_type != "application/x-ndjson" {
        s.violations.push(format!(
            "Content-Type {content_type:?}, not application/x-ndjson"
        ));
    }
    let ndjson = if gzip {
        let mut plain = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain) {
            s.violations
                .push(format!("Content-Encoding gzip, but: {e}"));
            return error_response(400, "parse_exception", "bad gzip");
        }
        plain
    } else {
        body.to_vec()
    };
    let mut request = BulkRequest {
        ids: vec![],
        operations: vec![],
        query: query.unwrap_or_default(),
        content_type,
        gzip,
        authorization: authorization.clone(),
        wire_bytes: body.len(),
        ndjson_bytes: ndjson.len(),
    };
    if let Some(required) = &s.required_authorization
        && authorization.as_ref() != Some(required)
    {
        s.requests.push(request);
        return error_response(
            401,
            "security_exception",
            "missing authentication credentials",
        );
    }
    if let Some(status) = s.always_status.or_else(|| s.request_statuses.pop_front()) {
        s.requests.push(request);
        return error_response(status, "injected", "injected by the test");
    }
    if let Some(max) = s.max_content_length
        && ndjson.len() > max
    {
        s.requests.push(request);
        return error_response(413, "request_entity_too_large", "body too large");
    }
    if !ndjson.ends_with(b"\n") {
        s.violations.push("body does not end with a newline".into());
        s.requests.push(request);
        return error_response(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    let text = match std::str::from_utf8(&ndjson) {
        Ok(text) => text,
        Err(e) => {
            s.violations.push(format!("body is not UTF-8: {e}"));
            return error_response(400, "parse_exception", "not UTF-8");
        }
    };
    let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
    if !lines.len().is_multiple_of(2) {
        s.violations
            .push(format!("{} lines: not action/source pairs", lines.len()));
        return error_response(400, "illegal_argument_exception", "odd line count");
    }
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let (action, source) = (pair[0], pair[1]);
        let Some((operation, index, id)) = parse_action(action, &mut s.violations) else {
            return error_response(400, "illegal_argument_exception", "bad action line");
        };
        if !matches!(serde_json::from_str::<Value>(source), Ok(Value::Object(_))) {
            s.violations
                .push(format!("source of {id:?} is not one JSON object: {source}"));
        }
        request.ids.push(id.clone());
        request.operations.push(operation.clone());
        let injected = s.item_failures.get_mut(&id).and_then(VecDeque::pop_front);
        let key = (index.clone(), id.clone());
        let (status, error) = match injected {
            Some((status, kind)) => (status, Some(kind)),
            None if operation == "create" && s.documents.contains_key(&key) => {
                (409, Some("version_conflict_engine_exception".to_string()))
            }
            None => {
                let existed = s.documents.insert(key, source.to_string()).is_some();
                (if existed { 200 } else { 201 }, None)
            }
        };
        let mut result = serde_json::json!({"_index": index, "_id": id, "status": status});
        if let Some(kind) = error {
            errors = true;
            result["error"] =
                serde_json::json!({"type": kind, "reason": format!("injected {kind}")});
        }
        items.push(serde_json::json!({ operation: result }));
    }
    s.requests.push(request);
    json_response(
        200,
        serde_json::json!({"took": 1, "errors": errors, "items": items}).to_string(),
    )
}

/// Checks an action line as the Bulk API reads it: one key, the operation, holding
/// `_index` and (for this sink, always) `_id`.
fn parse_action(action: &str, violations: &mut Vec<String>) -> Option<(String, String, String)> {
    let value: Value = match serde_json::from_str(action) {
        Ok(v) => v,
        Err(e) => {
            violations.push(format!("action line is not JSON ({e}): {action}"));
            return None;
        }
    };
    let Some(object) = value.as_object().filter(|o| o.len() == 1) else {
        violations.push(format!("action line is not a one-key object: {action}"));
        return None;
    };
    let (operation, meta) = object.iter().next()?;
    if !matches!(operation.as_str(), "index" | "create") {
        violations.push(format!("unexpected operation {operation:?}"));
        return None;
    }
    let index = meta["_index"].as_str();
    let id = meta["_id"].as_str();
    let known = meta
        .as_object()
        .is_some_and(|m| m.keys().all(|k| k == "_index" || k == "_id"));
    match (index, id, known) {
        (Some(index), Some(id), true) if !id.is_empty() => {
            Some((operation.clone(), index.to_string(), id.to_string()))
        }
        _ => {
            violations.push(format!(
                "action line lacks _index/_id or has extra keys: {action}"
            ));
            None
        }
    }
}
