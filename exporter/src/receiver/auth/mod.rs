//! Receiver authentication: checks a request's `Authorization` header (bearer tokens, basic
//! auth) against the credentials of `receivers.auth`, from its headers alone, so both
//! receivers refuse a stranger before reading a byte of the body. Not the answer sent
//! (`answer`), nor TLS client certificates.
//!
//! Credentials are compared in constant time (`subtle`) and never logged or counted: a
//! refusal records only why (no header, another scheme, wrong credentials).

mod secret_file;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use spansink_config::ReceiverAuthConfig;
use subtle::{Choice, ConstantTimeEq};

use crate::telemetry::Metrics;
use secret_file::SecretFile;
pub use secret_file::SecretFileError;

/// Why the receivers cannot start with `receivers.auth`: a credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {name} is not set; fill it from a Secret (envFrom or valueFrom) or remove it")]
    EnvNotSet { path: String, name: String },
    #[error("{path}: {name} is empty; put the credential in it or remove it")]
    EnvEmpty { path: String, name: String },
    #[error(
        "{path}: {file}: {source}; mount the Secret holding the credential there, or remove it"
    )]
    File {
        path: String,
        file: String,
        #[source]
        source: SecretFileError,
    },
}

/// Why a request was not authenticated; safe to show the client and to log (it never
/// contains what the client sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unauthenticated {
    #[error("the request has no Authorization header")]
    Missing,
    #[error("the Authorization header is not a scheme this receiver accepts")]
    Scheme,
    #[error("the credentials in the Authorization header are not valid")]
    Invalid,
}

/// The credentials of `receivers.auth`, checked against each request.
pub struct Authenticator {
    tokens: Vec<Secret>,
    basic: Option<BasicUser>,
}

struct BasicUser {
    username: Vec<u8>,
    password: Secret,
}

/// One accepted credential: fixed at start (from an environment variable) or the current
/// content of a file.
enum Secret {
    Fixed(Vec<u8>),
    // Boxed: the file state (path, lock, metric handles) is ~20x a fixed token.
    File(Box<SecretFile>),
}

impl Secret {
    fn matches(&self, presented: &[u8]) -> Choice {
        match self {
            Secret::Fixed(secret) => secret.as_slice().ct_eq(presented),
            Secret::File(file) => file.with_current(|secret| secret.ct_eq(presented)),
        }
    }
}

impl Authenticator {
    /// Reads every credential of `config` now (environment variables from the process).
    pub fn from_config(config: &ReceiverAuthConfig, metrics: &Metrics) -> Result<Self, AuthError> {
        Self::with_env(config, metrics, &|name| std::env::var(name).ok())
    }

    /// [`Authenticator::from_config`] with environment variables looked up by `env`.
    pub fn with_env(
        config: &ReceiverAuthConfig,
        metrics: &Metrics,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthError> {
        let base = "receivers.auth";
        let mut tokens = Vec::new();
        for (i, name) in config.bearer_tokens_env.iter().enumerate() {
            let path = format!("{base}.bearer_tokens_env[{i}]");
            tokens.push(from_env(path, name, env)?);
        }
        for (i, file) in config.bearer_token_files.iter().enumerate() {
            let path = format!("{base}.bearer_token_files[{i}]");
            tokens.push(from_file(path, file, metrics)?);
        }
        let basic = match &config.basic {
            None => None,
            Some(basic) => {
                let password = match (&basic.password_env, &basic.password_file) {
                    (Some(name), _) => from_env(format!("{base}.basic.password_env"), name, env)?,
                    (None, Some(file)) => {
                        from_file(format!("{base}.basic.password_file"), file, metrics)?
                    }
                    // `validate` requires one of them; an authenticator that accepts no
                    // password is the safe reading of a config that skipped it.
                    (None, None) => Secret::Fixed(Vec::new()),
                };
                Some(BasicUser {
                    username: basic.username.as_bytes().to_vec(),
                    password,
                })
            }
        };
        Ok(Self { tokens, basic })
    }

    /// Whether `headers` carry an accepted `Authorization: Bearer` token or basic-auth
    /// credentials.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Unauthenticated> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Unauthenticated::Missing);
        };
        let value = value.as_bytes();
        let (scheme, credentials) = match value.iter().position(|&b| b == b' ') {
            Some(space) => (&value[..space], value[space + 1..].trim_ascii()),
            None => (value, &b""[..]),
        };
        let accepted = if scheme.eq_ignore_ascii_case(b"bearer") && !self.tokens.is_empty() {
            self.bearer_matches(credentials)
        } else if scheme.eq_ignore_ascii_case(b"basic")
            && let Some(user) = &self.basic
        {
            basic_matches(user, credentials)
        } else {
            return Err(Unauthenticated::Scheme);
        };
        match bool::from(accepted) {
            true => Ok(()),
            false => Err(Unauthenticated::Invalid),
        }
    }

    /// Every token is compared, so the time taken does not tell which one matched.
    fn bearer_matches(&self, presented: &[u8]) -> Choice {
        let none = Choice::from(0);
        match presented.is_empty() {
            true => none,
            false => self
                .tokens
                .iter()
                .fold(none, |any, token| any | token.matches(presented)),
        }
    }

    /// The `WWW-Authenticate` challenges a 401 carries: one per accepted scheme.
    pub(crate) fn challenges(&self) -> Vec<HeaderValue> {
        let mut challenges = Vec::new();
        if !self.tokens.is_empty() {
            challenges.push(HeaderValue::from_static("Bearer realm=\"spansink\""));
        }
        if self.basic.is_some() {
            challenges.push(HeaderValue::from_static(
                "Basic realm=\"spansink\", charset=\"UTF-8\"",
            ));
        }
        challenges
    }
}

fn basic_matches(user: &BasicUser, credentials: &[u8]) -> Choice {
    let Ok(decoded) = BASE64.decode(credentials) else {
        return Choice::from(0);
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Choice::from(0);
    };
    let (username, password) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both compared whatever the first gives, so the time does not tell which was wrong.
    let name_ok = user.username.as_slice().ct_eq(username);
    let password_ok = match password.is_empty() {
        true => Choice::from(0),
        false => user.password.matches(password),
    };
    name_ok & password_ok
}

fn from_env(
    path: String,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, AuthError> {
    let name = name.to_string();
    match env(&name) {
        None => Err(AuthError::EnvNotSet { path, name }),
        Some(value) if value.trim().is_empty() => Err(AuthError::EnvEmpty { path, name }),
        Some(value) => Ok(Secret::Fixed(value.trim().as_bytes().to_vec())),
    }
}

fn from_file(path: String, file: &str, metrics: &Metrics) -> Result<Secret, AuthError> {
    SecretFile::open(std::path::Path::new(file), metrics)
        .map(|file| Secret::File(Box::new(file)))
        .map_err(|source| AuthError::File {
            path,
            file: file.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests;
