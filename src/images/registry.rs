//! The registry API (distribution v2) as a pull needs it: token and basic auth,
//! retries of transient failures, blobs resumed with `Range` where they broke off,
//! and documents read only up to a bound, whatever size a registry declares.

use super::auth::{self, Challenge};
use super::progress::Progress;
use super::retry::{Retries, Transient, parse_retry_after};
use crate::config::RegistryConfig;
use crate::error::error_chain;
use bytes::{Bytes, BytesMut};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Manifests, indexes, configs and token answers are read up to this size.
pub const DOCUMENT_LIMIT: u64 = 4 << 20;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that delivers no byte for this long is dropped and tried again.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
const REDIRECTS: usize = 5;
/// Bytes per Content.Write message: large enough to keep gRPC overhead negligible.
const WRITE_CHUNK: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Failed(String),
    #[error("registry {host} refused the credentials of user {user:?} for repository {repository}")]
    Refused {
        host: String,
        user: String,
        repository: String,
    },
    #[error(
        "registry {host} refused anonymous access to repository {repository}: no credentials are configured for {host}"
    )]
    NoCredentials { host: String, repository: String },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{0}")]
    RetriesSpent(String),
}

/// How one attempt failed.
enum Failure {
    Transient(Transient),
    Permanent(RegistryError),
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Failure {
        Failure::Permanent(error)
    }
}

fn transient(cause: String) -> Failure {
    Failure::Transient(Transient {
        cause,
        retry_after: None,
    })
}

/// A network failure: always worth another attempt.
fn network(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        transient(format!(
            "no answer within {} s: {}",
            READ_TIMEOUT.as_secs(),
            error_chain(error)
        ))
    } else {
        transient(error_chain(error))
    }
}

/// One repository at the host actually contacted (a mirror, or the registry).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As in the configuration: `docker.io`, `127.0.0.1:5001`.
    pub host: String,
    base: String,
    pub repository: String,
    /// Another source follows this one (it is a mirror): a manifest it fails to serve is
    /// asked of the next source at once, as Docker does, rather than retried here.
    pub fallback: bool,
}

/// A document as served: its bytes, and what the registry said of them.
pub struct Fetched {
    pub bytes: Bytes,
    pub media_type: Option<String>,
    pub digest: Option<String>,
}

#[derive(Clone)]
enum Authorization {
    Bearer { header: String, until: Instant },
    Basic(String),
}

pub struct RegistryClient {
    http: reqwest::Client,
    settings: Arc<BTreeMap<String, RegistryConfig>>,
    plain_http: HashSet<String>,
    /// By (host, repository): what the registry last accepted.
    authorizations: Mutex<HashMap<(String, String), Authorization>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

enum Streamed {
    All,
    /// The content writer ended early; its own error says why.
    WriterGone,
}

impl RegistryClient {
    pub fn new(settings: Arc<BTreeMap<String, RegistryConfig>>) -> RegistryClient {
        // Plain HTTP for registries marked insecure and for mirrors given as http://.
        let plain_http = settings
            .iter()
            .filter(|(_, s)| s.insecure)
            .map(|(host, _)| host.clone())
            .chain(settings.values().flat_map(|s| {
                s.mirrors
                    .iter()
                    .filter_map(|m| m.strip_prefix("http://"))
                    .map(|host| host.trim_end_matches('/').to_string())
            }))
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // Followed by hand, so that no credential goes to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS backend is built in");
        RegistryClient {
            http,
            settings,
            plain_http,
            authorizations: Mutex::default(),
        }
    }

    pub fn endpoint(&self, host: &str, repository: &str) -> Endpoint {
        // Docker Hub's API is not served at its name.
        let api_host = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let scheme = if self.plain_http.contains(host) {
            "http"
        } else {
            "https"
        };
        Endpoint {
            host: host.to_string(),
            base: format!("{scheme}://{api_host}"),
            repository: repository.to_string(),
            fallback: false,
        }
    }

    /// A manifest or index by tag or digest, read up to `DOCUMENT_LIMIT`.
    pub async fn manifest(
        &self,
        endpoint: &Endpoint,
        reference: &str,
        accept: &[&str],
        progress: &Progress,
    ) -> Result<Fetched, RegistryError> {
        let path = format!("manifests/{reference}");
        let mut retries = Retries::new(progress);
        loop {
            let attempt = async {
                let response = self.get(endpoint, &path, accept, 0).await?;
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let (media_type, digest) = (
                    header(CONTENT_TYPE.as_str()),
                    header("docker-content-digest"),
                );
                let bytes = read_capped(response, DOCUMENT_LIMIT, "the manifest").await?;
                Ok(Fetched {
                    bytes,
                    media_type,
                    digest,
                })
            };
            // A mirror with more endpoints after it is passed over at once, as Docker does.
            let retry = !endpoint.fallback;
            if let Some(fetched) = settle(&mut retries, attempt.await, retry).await? {
                return Ok(fetched);
            }
        }
    }

    /// A small blob (an image config), read whole up to `DOCUMENT_LIMIT`.
    pub async fn small_blob(
        &self,
        endpoint: &Endpoint,
        digest: &str,
        progress: &Progress,
    ) -> Result<Bytes, RegistryError> {
        let path = format!("blobs/{digest}");
        let mut retries = Retries::new(progress);
        loop {
            let attempt = async {
                let response = self.get(endpoint, &path, &[], 0).await?;
                read_capped(response, DOCUMENT_LIMIT, "the image config").await
            };
            if let Some(bytes) = settle(&mut retries, attempt.await, true).await? {
                return Ok(bytes);
            }
        }
    }

    /// Streams a blob of `size` bytes into `chunks`, counting every byte received in
    /// `progress`. A connection that breaks is resumed where it stopped (`Range`);
    /// the digest is checked before the last chunk goes, so a wrong blob never commits.
    pub async fn stream_blob(
        &self,
        endpoint: &Endpoint,
        digest: &str,
        size: u64,
        progress: &Progress,
        chunks: mpsc::Sender<Bytes>,
    ) -> Result<(), RegistryError> {
        let mut retries = Retries::new(progress);
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut buffer = BytesMut::with_capacity(WRITE_CHUNK);
        loop {
            let attempt = self.stream_from(
                endpoint,
                digest,
                size,
                progress,
                &chunks,
                (&mut hasher, &mut written, &mut buffer),
            );
            match settle(&mut retries, attempt.await, true).await? {
                Some(Streamed::All) => break,
                Some(Streamed::WriterGone) => return Ok(()),
                None => {}
            }
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(RegistryError::Failed(format!(
                "digest mismatch: the registry sent {actual}"
            )));
        }
        if !buffer.is_empty() {
            let _ = chunks.send(buffer.freeze()).await;
        }
        Ok(())
    }

    async fn stream_from(
        &self,
        endpoint: &Endpoint,
        digest: &str,
        size: u64,
        progress: &Progress,
        chunks: &mpsc::Sender<Bytes>,
        (hasher, written, buffer): (&mut Sha256, &mut u64, &mut BytesMut),
    ) -> Result<Streamed, Failure> {
        let mut response = self
            .get(endpoint, &format!("blobs/{digest}"), &[], *written)
            .await?;
        // A registry that ignores Range sends the whole blob again.
        let mut skip = if response.status() == StatusCode::PARTIAL_CONTENT {
            0
        } else {
            *written
        };
        let coming = response.content_length().unwrap_or(0);
        if coming > (size - *written) + skip {
            return Err(RegistryError::Failed(format!(
                "the registry sends {coming} bytes of a blob declared as {size}"
            ))
            .into());
        }
        loop {
            let piece = match response.chunk().await {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(error) => {
                    return Err(transient(format!(
                        "connection lost after {written} of {size} bytes: {}",
                        error_chain(&error)
                    )));
                }
            };
            let drop_front = skip.min(piece.len() as u64);
            skip -= drop_front;
            let piece = piece.slice(drop_front as usize..);
            if *written + piece.len() as u64 > size {
                return Err(RegistryError::Failed(format!(
                    "the registry sent more than the {size} bytes the blob is declared as"
                ))
                .into());
            }
            hasher.update(&piece);
            progress.add_transferred(piece.len() as u64);
            *written += piece.len() as u64;
            buffer.extend_from_slice(&piece);
            if buffer.len() >= WRITE_CHUNK && chunks.send(buffer.split().freeze()).await.is_err() {
                return Ok(Streamed::WriterGone);
            }
        }
        if *written < size {
            return Err(transient(format!(
                "the connection ended after {written} of {size} bytes"
            )));
        }
        Ok(Streamed::All)
    }

    /// GET `/v2/<repository>/<path>`, authenticating when challenged. Errors by status:
    /// 429, 408 and 5xx are transient, other failures are not.
    async fn get(
        &self,
        endpoint: &Endpoint,
        path: &str,
        accept: &[&str],
        offset: u64,
    ) -> Result<Response, Failure> {
        let url = format!("{}/v2/{}/{path}", endpoint.base, endpoint.repository);
        let mut authenticated = false;
        loop {
            let authorization = self.cached(endpoint);
            let response = self
                .follow(&url, accept, offset, authorization.as_deref())
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(auth::parse_challenge)
                    .ok_or_else(|| {
                        RegistryError::Failed(format!(
                            "{url}: HTTP 401 without a Bearer or Basic challenge"
                        ))
                    })?;
                self.authenticate(endpoint, challenge).await?;
                authenticated = true;
                continue;
            }
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                return Err(self.refused(endpoint).into());
            }
            return check_status(response, &url).await;
        }
    }

    /// Follows redirects; the Authorization header goes only to the first URL's origin.
    async fn follow(
        &self,
        url: &str,
        accept: &[&str],
        offset: u64,
        authorization: Option<&str>,
    ) -> Result<Response, Failure> {
        let mut url = Url::parse(url)
            .map_err(|e| RegistryError::Failed(format!("{url} is not a URL: {e}")))?;
        let origin = url.origin();
        for _ in 0..=REDIRECTS {
            let mut request = self.http.get(url.clone());
            if !accept.is_empty() {
                request = request.header(ACCEPT, accept.join(", "));
            }
            if offset > 0 {
                request = request.header(RANGE, format!("bytes={offset}-"));
            }
            if let Some(authorization) = authorization
                && url.origin() == origin
            {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = request.send().await.map_err(|e| network(&e))?;
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok());
            match location {
                Some(location) if response.status().is_redirection() => {
                    url = url.join(location).map_err(|e| {
                        RegistryError::Failed(format!("redirect to {location:?}: {e}"))
                    })?;
                }
                _ => return Ok(response),
            }
        }
        Err(RegistryError::Failed(format!("{url}: more than {REDIRECTS} redirects")).into())
    }

    fn cached(&self, endpoint: &Endpoint) -> Option<String> {
        let key = (endpoint.host.clone(), endpoint.repository.clone());
        let mut cache = self
            .authorizations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match cache.get(&key)? {
            Authorization::Bearer { header, until } if *until > Instant::now() => {
                Some(header.clone())
            }
            Authorization::Bearer { .. } => {
                cache.remove(&key);
                None
            }
            Authorization::Basic(header) => Some(header.clone()),
        }
    }

    fn remember(&self, endpoint: &Endpoint, authorization: Authorization) {
        let key = (endpoint.host.clone(), endpoint.repository.clone());
        let mut cache = self
            .authorizations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.insert(key, authorization);
    }

    fn refused(&self, endpoint: &Endpoint) -> RegistryError {
        match auth::credentials(&endpoint.host, self.settings.get(&endpoint.host)) {
            Ok(Some(credentials)) => RegistryError::Refused {
                host: endpoint.host.clone(),
                user: credentials.username,
                repository: endpoint.repository.clone(),
            },
            Ok(None) => RegistryError::NoCredentials {
                host: endpoint.host.clone(),
                repository: endpoint.repository.clone(),
            },
            Err(unreadable) => RegistryError::Failed(unreadable),
        }
    }

    /// Answers a challenge: basic credentials, or a token from the realm (with the
    /// credentials when there are some, else anonymously, as Docker Hub allows).
    async fn authenticate(&self, endpoint: &Endpoint, challenge: Challenge) -> Result<(), Failure> {
        let credentials = auth::credentials(&endpoint.host, self.settings.get(&endpoint.host))
            .map_err(RegistryError::Failed)?;
        let (realm, service) = match challenge {
            Challenge::Basic => {
                let credentials = credentials.ok_or_else(|| self.refused(endpoint))?;
                self.remember(endpoint, Authorization::Basic(credentials.basic()));
                return Ok(());
            }
            Challenge::Bearer { realm, service, .. } => (realm, service),
        };
        let mut url = Url::parse(&realm)
            .map_err(|e| RegistryError::Failed(format!("token realm {realm:?}: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &format!("repository:{}:pull", endpoint.repository));
        }
        let mut request = self.http.get(url);
        if let Some(credentials) = &credentials {
            request = request.header(AUTHORIZATION, credentials.basic());
        }
        let response = request.send().await.map_err(|e| network(&e))?;
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self.refused(endpoint).into());
        }
        let response = check_status(response, &realm).await?;
        let body = read_capped(response, DOCUMENT_LIMIT, "the token answer").await?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::Failed(format!("token service {realm}: unreadable answer: {e}"))
        })?;
        let token = answer
            .access_token
            .or(answer.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Failed(format!("token service {realm}: no token")))?;
        // Docker's token spec: 60 s unless said otherwise; renewed a little early.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).clamp(1, 86_400));
        let until = Instant::now() + lifetime - lifetime.min(Duration::from_secs(10)) / 2;
        let header = format!("Bearer {token}");
        self.remember(endpoint, Authorization::Bearer { header, until });
        Ok(())
    }
}

/// Success passes; 429, 408 and 5xx are transient (with the wait the registry asks
/// for); any other status fails for good.
async fn check_status(response: Response, url: &str) -> Result<Response, Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let cause = format!("{url}: HTTP {status}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        return Err(Failure::Transient(Transient { cause, retry_after }));
    }
    // The registry's own words (`{"errors": [{"message"}]}`), briefly.
    let said = match read_capped(response, 4096, "an error answer").await {
        Ok(body) => serde_json::from_slice::<ErrorsJson>(&body)
            .map(|e| {
                e.errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let cause = if said.is_empty() {
        cause
    } else {
        format!("{cause}: {said}")
    };
    Err(RegistryError::Failed(cause).into())
}

#[derive(Deserialize)]
struct ErrorsJson {
    errors: Vec<ErrorJson>,
}

#[derive(Deserialize)]
struct ErrorJson {
    #[serde(default)]
    message: String,
}

/// The body, refused as soon as it is known to exceed `limit`: by its declared length
/// before any byte is read, else while it streams in.
async fn read_capped(mut response: Response, limit: u64, what: &str) -> Result<Bytes, Failure> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_string(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(too_large().into());
    }
    let mut body = BytesMut::new();
    while let Some(piece) = response.chunk().await.map_err(|e| network(&e))? {
        if (body.len() + piece.len()) as u64 > limit {
            return Err(too_large().into());
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

/// An attempt's outcome: its value, `None` after waiting to try again (a transient
/// failure, while `retry` holds and the retries last), or the error to give up with.
async fn settle<T>(
    retries: &mut Retries<'_>,
    attempt: Result<T, Failure>,
    retry: bool,
) -> Result<Option<T>, RegistryError> {
    match attempt {
        Ok(value) => Ok(Some(value)),
        Err(Failure::Permanent(error)) => Err(error),
        Err(Failure::Transient(failure)) if !retry => Err(RegistryError::Failed(failure.cause)),
        Err(Failure::Transient(failure)) => {
            retries
                .wait(failure)
                .await
                .map_err(RegistryError::RetriesSpent)?;
            Ok(None)
        }
    }
}
