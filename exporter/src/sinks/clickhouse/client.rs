//! The HTTP calls of the ClickHouse sink (a statement, an `INSERT ... FORMAT ...` with a
//! body) and which ClickHouse answers are worth a retry. Not rows or DDL.

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};

use spansink_config::ClickHouseCompression;

use crate::sinks::SinkError;

/// Longest a TCP/TLS connect may take: a server that does not answer SYN is down, and
/// the request timeout is for slow inserts, not for that.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Error text kept from a ClickHouse answer (they carry stack traces on some versions).
const MAX_ERROR_TEXT: usize = 600;

/// Where and as whom requests go.
pub struct ClientOptions<'a> {
    pub endpoint: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<String>,
    pub request_timeout: std::time::Duration,
    /// Extra settings for inserts, as URL parameters.
    pub settings: Vec<(String, String)>,
}

/// One HTTP client (a connection pool) for one server.
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    settings: Vec<(String, String)>,
}

impl Client {
    pub fn new(options: ClientOptions<'_>) -> Result<Self, String> {
        let endpoint = Url::parse(options.endpoint)
            .map_err(|e| format!("endpoint {:?} is not a URL: {e}", options.endpoint))?;
        let mut headers = HeaderMap::new();
        // Credentials in headers rather than the URL, which proxies and servers may log.
        if let Some(user) = options.username {
            headers.insert(
                "X-ClickHouse-User",
                HeaderValue::from_str(user).map_err(|_| {
                    "username contains characters a header cannot carry".to_string()
                })?,
            );
        }
        if let Some(password) = options.password {
            let mut value = HeaderValue::from_str(&password).map_err(|_| {
                "the password contains characters a header cannot carry".to_string()
            })?;
            value.set_sensitive(true);
            headers.insert("X-ClickHouse-Key", value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(options.request_timeout)
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        Ok(Self {
            http,
            endpoint,
            settings: options.settings,
        })
    }

    /// Runs one statement (DDL, `SELECT version()`) and returns the answer's text.
    pub async fn execute(&self, sql: &str) -> Result<String, SinkError> {
        let response = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(sql.to_string())
            .send()
            .await
            .map_err(|e| request_error("statement", &e))?;
        let status = response.status().as_u16();
        let code = exception_code_header(response.headers());
        let text = response
            .text()
            .await
            .map_err(|e| request_error("statement", &e))?;
        if status == 200 {
            Ok(text)
        } else {
            Err(classify(status, code, &text))
        }
    }

    /// Sends one insert: `query` (`INSERT INTO ... FORMAT ...`) in the URL, so the body is
    /// only rows, compressed as `compression` says.
    pub async fn insert(
        &self,
        query: &str,
        body: Bytes,
        content_type: &'static str,
        compression: ClickHouseCompression,
    ) -> Result<(), SinkError> {
        let mut url = self.endpoint.clone();
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("query", query);
            if compression == ClickHouseCompression::Lz4 {
                pairs.append_pair("decompress", "1");
            }
            for (key, value) in &self.settings {
                pairs.append_pair(key, value);
            }
        }
        let mut request = self.http.post(url).header(CONTENT_TYPE, content_type);
        if compression == ClickHouseCompression::Gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| request_error("INSERT", &e))?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let code = exception_code_header(response.headers());
        // An unreadable error body still has its status; classify on what there is.
        let text = response.text().await.unwrap_or_default();
        Err(classify(status, code, &text))
    }
}

/// Newer servers name the error code in a header; older ones only in the body.
fn exception_code_header(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("X-ClickHouse-Exception-Code")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A failure before ClickHouse answered: always transient (the server may be restarting
/// or the network briefly gone); the chain's retry policy bounds the attempts.
fn request_error(what: &str, error: &reqwest::Error) -> SinkError {
    let detail = error_chain(error);
    if error.is_timeout() {
        SinkError::transient(
            "timeout",
            format!(
                "ClickHouse {what} timed out: {detail}; raise clickhouse.request_timeout if inserts are just slow"
            ),
        )
    } else if error.is_connect() {
        SinkError::transient(
            "connect",
            format!("cannot connect to ClickHouse for the {what}: {detail}"),
        )
    } else {
        SinkError::transient("io", format!("ClickHouse {what} failed: {detail}"))
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    parts.join(": ")
}

/// The `N` of `Code: N` in an error body (`Code: 60, e.displayText() = ...` on old
/// servers, `Code: 60. DB::Exception: ...` on new ones).
pub fn body_exception_code(body: &str) -> Option<u32> {
    let start = body.find("Code: ")? + "Code: ".len();
    let digits: String = body[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Transient or permanent, from a ClickHouse answer that is not 200. The error code
/// decides where there is one (ClickHouse answers 500 for most errors, transient or not);
/// the HTTP status where there is none (a proxy's 502, a load balancer's 503).
pub fn classify(status: u16, header_code: Option<u32>, body: &str) -> SinkError {
    let code = header_code.or_else(|| body_exception_code(body));
    let text = shorten(body.trim());
    let message = match code {
        Some(code) => format!("ClickHouse answered HTTP {status}, code {code}: {text}"),
        None => format!("ClickHouse answered HTTP {status}: {text}"),
    };
    match code {
        Some(code) => classify_code(code, status, message),
        None => match status {
            401 | 403 => SinkError::permanent(
                "auth",
                format!("{message}; check clickhouse.username and the password variable"),
            ),
            408 | 429 | 500..=599 => SinkError::transient("unavailable", message),
            _ => SinkError::permanent("rejected", message),
        },
    }
}

fn classify_code(code: u32, status: u16, message: String) -> SinkError {
    match code {
        // Overload and capacity: the same insert succeeds once the server catches up.
        // 202 TOO_MANY_SIMULTANEOUS_QUERIES, 252 TOO_MANY_PARTS, 241 MEMORY_LIMIT_EXCEEDED,
        // 201 QUOTA_EXCEEDED (quotas are per interval), 439 CANNOT_SCHEDULE_TASK.
        202 | 252 | 241 | 201 | 439 => SinkError::transient("overloaded", message),
        // Timeouts, network trouble between servers, replicas and Keeper, shutdown:
        // 159 TIMEOUT_EXCEEDED, 209 SOCKET_TIMEOUT, 210 NETWORK_ERROR, 242
        // TABLE_IS_READ_ONLY (replica lost Keeper), 319 UNKNOWN_STATUS_OF_INSERT, 225/999
        // ZooKeeper/Keeper errors, 236 ABORTED, 394 QUERY_WAS_CANCELLED, 285
        // TOO_FEW_LIVE_REPLICAS, 286 UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE, 3
        // UNEXPECTED_END_OF_FILE (a body cut by a dropped connection).
        159 | 209 | 210 | 242 | 319 | 225 | 999 | 236 | 394 | 285 | 286 | 3 => {
            SinkError::transient("unavailable", message)
        }
        // 516 AUTHENTICATION_FAILED, 192 UNKNOWN_USER, 193 WRONG_PASSWORD, 194
        // REQUIRED_PASSWORD, 195 IP_ADDRESS_NOT_ALLOWED.
        516 | 192 | 193 | 194 | 195 => SinkError::permanent(
            "auth",
            format!("{message}; check clickhouse.username and the password variable"),
        ),
        // 497 ACCESS_DENIED, 164 READONLY.
        497 | 164 => SinkError::permanent(
            "auth",
            format!("{message}; grant INSERT (and CREATE when create_table is on) to this user"),
        ),
        // 60 UNKNOWN_TABLE, 81 UNKNOWN_DATABASE.
        60 | 81 => SinkError::permanent(
            "no_table",
            format!("{message}; create the table or turn on clickhouse.create_table"),
        ),
        // The table does not fit the rows: 16 NO_SUCH_COLUMN_IN_TABLE, 117 INCORRECT_DATA
        // (an unknown field), 50 UNKNOWN_TYPE, 44 ILLEGAL_COLUMN, 47 UNKNOWN_IDENTIFIER,
        // 53 TYPE_MISMATCH, 70 CANNOT_CONVERT_TYPE, 36 BAD_ARGUMENTS.
        16 | 117 | 50 | 44 | 47 | 53 | 70 | 36 => SinkError::permanent(
            "schema",
            format!(
                "{message}; the table's columns do not fit the span rows (see the sink's row format), \
                 or set input_format_skip_unknown_fields: \"1\" in clickhouse.settings"
            ),
        ),
        // Rows the table cannot parse: 26/27 CANNOT_PARSE_*, 6 CANNOT_PARSE_TEXT, 38
        // CANNOT_PARSE_DATE, 41 CANNOT_PARSE_DATETIME, 69 ARGUMENT_OUT_OF_BOUND, 72
        // CANNOT_PARSE_NUMBER, 62 SYNTAX_ERROR, 115 UNKNOWN_SETTING.
        26 | 27 | 6 | 38 | 41 | 69 | 72 | 62 | 115 => SinkError::permanent("rejected", message),
        // Unknown codes: a 4xx is the server saying the request is wrong; anything else
        // is retried (bounded by the retry policy, then the fallback).
        _ if (400..500).contains(&status) => SinkError::permanent("rejected", message),
        _ => SinkError::transient("unavailable", message),
    }
}

fn shorten(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_string();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_UNKNOWN_TABLE: &str = "Code: 60, e.displayText() = DB::Exception: Table default.nope doesn't exist., e.what() = DB::Exception\n";
    const NEW_TOO_MANY_PARTS: &str = "Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts. (TOO_MANY_PARTS) (version 24.3.1.1)";

    #[test]
    fn the_code_is_read_from_old_and_new_bodies() {
        assert_eq!(body_exception_code(OLD_UNKNOWN_TABLE), Some(60));
        assert_eq!(body_exception_code(NEW_TOO_MANY_PARTS), Some(252));
        assert_eq!(body_exception_code("Bad Gateway"), None);
        assert_eq!(body_exception_code("Code: x"), None);
    }

    #[test]
    fn overload_and_availability_codes_are_transient() {
        for code in [241, 252, 202, 201, 159, 209, 210, 242, 319, 999, 3] {
            let e = classify(500, Some(code), "Code: 0. whatever");
            assert!(e.is_transient(), "{code}: {e}");
        }
        let e = classify(500, None, NEW_TOO_MANY_PARTS);
        assert_eq!((e.is_transient(), e.reason()), (true, "overloaded"));
    }

    #[test]
    fn schema_auth_and_parse_codes_are_permanent() {
        let cases = [
            (60, "no_table"),
            (81, "no_table"),
            (16, "schema"),
            (117, "schema"),
            (516, "auth"),
            (192, "auth"),
            (193, "auth"),
            (497, "auth"),
            (164, "auth"),
            (27, "rejected"),
            (26, "rejected"),
            (62, "rejected"),
        ];
        for (code, reason) in cases {
            let e = classify(500, Some(code), "");
            assert!(!e.is_transient(), "{code}: {e}");
            assert_eq!(e.reason(), reason, "{code}");
        }
        let e = classify(404, None, OLD_UNKNOWN_TABLE);
        assert_eq!((e.is_transient(), e.reason()), (false, "no_table"));
        assert!(e.to_string().contains("create_table"), "{e}");
    }

    #[test]
    fn without_a_code_the_status_decides() {
        assert!(classify(502, None, "Bad Gateway").is_transient());
        assert!(classify(503, None, "").is_transient());
        assert!(classify(429, None, "").is_transient());
        assert_eq!(classify(401, None, "").reason(), "auth");
        assert!(!classify(400, None, "bad").is_transient());
        // Unknown codes: 4xx permanent, else retried.
        assert!(!classify(400, Some(12345), "").is_transient());
        assert!(classify(500, Some(12345), "").is_transient());
    }

    #[test]
    fn long_bodies_are_shortened_on_a_char_boundary() {
        let body = format!("Code: 27. {}", "✓".repeat(1000));
        let e = classify(500, None, &body);
        assert!(e.to_string().len() < 1000, "{e}");
        assert!(e.to_string().contains('…'));
    }
}
