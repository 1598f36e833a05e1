//! The http sink: one `POST` per batch, retried.

use std::time::Duration;

use ureq::Agent;
use ureq::http::Uri;

use super::{Output, Sink};
use crate::Error;

/// Waits before the retries: 3 retries after the first attempt.
const BACKOFF: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];
/// How long one attempt may take in all.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error response's body is quoted.
const QUOTED_BODY: u64 = 512;

/// Posts each batch's text to a URL.
#[derive(Debug)]
pub(super) struct HttpSink {
    name: String,
    url: String,
    agent: Agent,
}

/// What one attempt gave, when not a success.
enum Failure {
    /// Worth retrying (connection error, `5xx`).
    Transient(String),
    /// Not (a `4xx`, a redirect, a request ureq cannot make).
    Final(String),
}

impl HttpSink {
    /// Checks the URL.
    pub(super) fn open(name: &str, url: &str) -> Result<Self, Error> {
        let fail = |why: String| Error::Sink {
            name: name.to_string(),
            message: format!("bad URL `{url}`: {why}"),
        };
        let uri: Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
        if uri.scheme().is_none() || uri.host().is_none() {
            return Err(fail("expected http://HOST[:PORT]/PATH".to_string()));
        }
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .build()
            .new_agent();
        Ok(Self {
            name: name.to_string(),
            url: url.to_string(),
            agent,
        })
    }

    fn attempt(&self, out: &Output<'_>, body: &str) -> Result<(), Failure> {
        let response = self
            .agent
            .post(&self.url)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("X-Dstream-Job", out.job)
            .header("X-Dstream-Stream", out.stream)
            .header("X-Dstream-Batch", out.batch.to_string())
            .send(body);
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                return Err(match e {
                    ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound
                    | ureq::Error::Protocol(_)
                    | ureq::Error::BodyStalled => Failure::Transient(e.to_string()),
                    _ => Failure::Final(e.to_string()),
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let quoted = response
            .body_mut()
            .with_config()
            .limit(QUOTED_BODY)
            .read_to_string()
            .map(|b| b.trim().to_string())
            .unwrap_or_default();
        let what = if quoted.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {quoted}")
        };
        if status.is_server_error() {
            Err(Failure::Transient(what))
        } else {
            Err(Failure::Final(what))
        }
    }
}

impl Sink for HttpSink {
    fn write(&mut self, out: &Output<'_>) -> Result<(), Error> {
        let body = out.render();
        let mut waits = BACKOFF.iter();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match self.attempt(out, &body) {
                Ok(()) => return Ok(()),
                Err(Failure::Final(what)) => {
                    return Err(Error::Sink {
                        name: self.name.clone(),
                        message: format!("POST {} (batch {}): {what}", self.url, out.batch),
                    });
                }
                Err(Failure::Transient(what)) => what,
            };
            match waits.next() {
                Some(wait) => {
                    tracing::warn!(sink = %self.name, url = %self.url, batch = out.batch, error = %last, retry_in = ?wait, "POST failed; retrying");
                    std::thread::sleep(*wait);
                }
                None => {
                    return Err(Error::Sink {
                        name: self.name.clone(),
                        message: format!(
                            "POST {} (batch {}) failed {attempts} times; last: {last}",
                            self.url, out.batch
                        ),
                    });
                }
            }
        }
    }
}
