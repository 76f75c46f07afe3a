//! Outbound HTTP for scripts: `wasi:http`'s outgoing handler, served by
//! `wasmtime-wasi-http`, with this sender in place of its default one.
//!
//! Rule: a request goes out only after, in this order, it is counted
//! against the invocation's request limit, the script's principal (and its
//! deployer) hold [`Capability::HttpOutbound`], its scheme, host and port
//! match one of the app's allowed hosts, and its host resolves to an
//! address the SSRF guard accepts ([`crate::outbound`]); the connection is
//! then made to that checked address, never to the name again. Each
//! request is bounded by the per-request timeout and the invocation's
//! deadline, whichever ends first, and its response body by the size
//! limit. A limit that trips is recorded on the invocation, which then
//! fails with the limit named, however the script answers.
//!
//! The run's log gets one line per request: method, URL without its query,
//! status or failure, and duration. Never a header or a body, where
//! credentials live.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::host::Call;
use super::limits::{LimitExceeded, LogBuffer, LogLevel};
use crate::auth::Capability;
use crate::outbound::{HostPattern, IpNet, check_address};
use crate::runtime::host::HostError;

/// The outbound limits of one invocation, from the sandbox ceiling.
#[derive(Clone, Debug)]
pub(super) struct OutboundLimits {
    pub max_requests: u32,
    pub timeout: Duration,
    pub max_body: u64,
    pub allow_nets: Arc<[IpNet]>,
}

/// One invocation's outbound HTTP: its limits, what it has spent and the
/// limit it tripped, if any.
pub(super) struct Outbound {
    call: Call,
    log: LogBuffer,
    limits: OutboundLimits,
    sent: AtomicU32,
    tripped: Mutex<Option<LimitExceeded>>,
    /// The app's allowed hosts, read on the first request.
    hosts: tokio::sync::OnceCell<Vec<HostPattern>>,
}

/// A refused or failed request: what the guest gets, and what the log says.
struct Failed(Error, String);

impl Outbound {
    pub(super) fn new(call: Call, log: LogBuffer, limits: OutboundLimits) -> Arc<Outbound> {
        Arc::new(Outbound {
            call,
            log,
            limits,
            sent: AtomicU32::new(0),
            tripped: Mutex::new(None),
            hosts: tokio::sync::OnceCell::new(),
        })
    }

    /// The limit this invocation tripped, if it did.
    pub(super) fn tripped(&self) -> Option<LimitExceeded> {
        self.tripped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn trip(&self, limit: LimitExceeded) -> String {
        let text = limit.to_string();
        let mut tripped = self.tripped.lock().unwrap_or_else(|p| p.into_inner());
        tripped.get_or_insert(limit);
        text
    }

    fn note(&self, level: LogLevel, line: String) {
        // Past the log limit the line is dropped; the log's own limit is
        // reported by the script's own writes.
        let _ = self.log.push(level, &line);
    }

    async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, Driver), Error> {
        let started = Instant::now();
        let shown = format!("{} {}", request.method(), shown_url(request.uri()));
        let (parts, body) = request.into_parts();
        // However the request ends, the guest's writes of its body succeed.
        let body = Drained::new(body, self.call.deadline()).boxed_unsync();
        let outcome = async {
            let (addrs, bound) = self.clone().admit(&parts, options, &shown).await?;
            self.clone().exchange(parts, body, addrs, bound).await
        }
        .await;

        match outcome {
            Ok((response, driver)) => {
                self.note(
                    LogLevel::Info,
                    format!(
                        "http {shown} -> {} ({} ms)",
                        response.status().as_u16(),
                        started.elapsed().as_millis()
                    ),
                );
                Ok((response, driver))
            }
            Err(Failed(error, why)) => {
                self.note(
                    LogLevel::Warn,
                    format!(
                        "http {shown} failed after {} ms: {why}",
                        started.elapsed().as_millis()
                    ),
                );
                Err(error)
            }
        }
    }

    /// The checks before any connection: the request limit, the
    /// principal, the allowed hosts and the address rule. The addresses to
    /// connect to, and the request's time bound.
    async fn admit(
        self: Arc<Self>,
        parts: &http::request::Parts,
        options: Option<RequestOptions>,
        shown: &str,
    ) -> Result<(Vec<SocketAddr>, Bound), Failed> {
        let sent = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        if sent > self.limits.max_requests {
            let why = self.trip(LimitExceeded::OutboundRequests {
                limit: self.limits.max_requests,
            });
            return Err(Failed(Error::InternalError(Some(why.clone())), why));
        }
        self.allowed_by_principal().await?;

        let uri = &parts.uri;
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or_else(|| Failed(Error::HttpRequestUriInvalid, "the URL has no host".into()))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        self.allowed_host(https, &host, port).await?;

        // The request's time: the per-request timeout or what is left of
        // the invocation's deadline, whichever ends first; and whatever the
        // guest asked for, if shorter.
        let now = Instant::now();
        let left = self.call.deadline().saturating_duration_since(now);
        let own = self.limits.timeout;
        let guest = options.and_then(|o| {
            o.connect_timeout
                .into_iter()
                .chain(o.first_byte_timeout)
                .min()
        });
        let budget = own.min(left).min(guest.unwrap_or(Duration::MAX));
        // Only our own timeout is a named limit of ours: the deadline trips
        // as the invocation's timeout, and a guest's shorter one is its own.
        let bound = Bound {
            outbound: self.clone(),
            ends: now + budget,
            named: own <= left && guest.is_none_or(|g| own <= g),
            request: shown.to_owned(),
            host,
            https,
        };
        let addrs = bound.wait(self.resolve(&bound.host, port)).await??;
        Ok((addrs, bound))
    }

    /// Connect to the first address that answers, and send the request.
    async fn exchange(
        self: Arc<Self>,
        parts: http::request::Parts,
        body: WasiBody,
        addrs: Vec<SocketAddr>,
        bound: Bound,
    ) -> Result<(http::Response<WasiBody>, Driver), Failed> {
        let connected = async {
            let stream = bound.wait(connect(&addrs)).await??;
            let stream: Box<dyn Stream> = if bound.https {
                Box::new(bound.wait(tls(&bound.host, stream)).await??)
            } else {
                Box::new(stream)
            };
            bound
                .wait(hyper::client::conn::http1::handshake(TokioIo::new(stream)))
                .await?
                .map_err(|e| Failed(Error::from(e), "the HTTP handshake failed".into()))
        };
        let (mut sender, conn) = connected.await?;
        // The connection is driven on its own task while the request is
        // sent and its body read; a little past the request's end, so that
        // it is the request's bound that reports the timeout.
        let until = bound.ends + Duration::from_millis(250);
        let driving = tokio::spawn(tokio::time::timeout_at(until, conn));
        let driver: Driver = Box::new(async move {
            match driving.await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(Error::from(e)),
                Ok(Err(_)) => Err(Error::ConnectionReadTimeout),
                Err(_) => Err(Error::InternalError(Some("connection task failed".into()))),
            }
        });
        // Over a direct connection the request line holds the path only.
        let mut request = http::Request::from_parts(parts, body);
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = match http::Uri::builder().path_and_query(path).build() {
            Ok(uri) => uri,
            Err(_) => return Err(Failed(Error::HttpRequestUriInvalid, "bad path".into())),
        };
        let response = bound
            .wait(sender.send_request(request))
            .await?
            .map_err(|e| {
                let why = format!("the request failed: {e}");
                Failed(Error::from(e), why)
            })?;

        let limit = self.limits.max_body;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            let why = self.trip(LimitExceeded::OutboundBody {
                limit,
                request: bound.request.clone(),
            });
            return Err(Failed(Error::HttpResponseBodySize(declared), why));
        }
        let response = response.map(|incoming| {
            LimitedBody {
                incoming,
                read: 0,
                limit,
                timer: Box::pin(tokio::time::sleep_until(bound.ends)),
                bound,
            }
            .boxed_unsync()
        });
        Ok((response, driver))
    }

    /// The principal the script runs as, and its deployer, may make
    /// outbound requests.
    async fn allowed_by_principal(&self) -> Result<(), Failed> {
        match self
            .call
            .check(Capability::HttpOutbound(self.call.app_id()))
            .await
        {
            Ok(()) => Ok(()),
            Err(HostError::PermissionDenied) => Err(Failed(
                Error::HttpRequestDenied,
                "denied: the script's principal may not make outbound requests (needs write access to the app)".into(),
            )),
            Err(other) => Err(Failed(
                Error::InternalError(Some("the host could not check the request, try again".into())),
                format!("the permission check failed: {other:?}"),
            )),
        }
    }

    /// The request's scheme, host and port match one of the app's allowed
    /// hosts.
    async fn allowed_host(&self, https: bool, host: &str, port: u16) -> Result<(), Failed> {
        let app = self.call.app_id();
        let hosts = self
            .hosts
            .get_or_try_init(|| async {
                let stored = self.call.storage(self.call.store().list_hosts(app)).await?;
                Ok::<_, HostError>(
                    stored
                        .iter()
                        .filter_map(|p| p.parse::<HostPattern>().ok())
                        .collect(),
                )
            })
            .await
            .map_err(|e| {
                Failed(
                    Error::InternalError(Some(
                        "the host could not read the allowed hosts, try again".into(),
                    )),
                    format!("reading the allowed hosts failed: {e:?}"),
                )
            })?;
        if hosts.iter().any(|p| p.matches(https, host, port)) {
            return Ok(());
        }
        let scheme = if https { "https" } else { "http" };
        Err(Failed(
            Error::HttpRequestDenied,
            format!(
                "denied: {scheme}://{host}:{port} is not one of the app's allowed hosts (app allow-host)"
            ),
        ))
    }

    /// The addresses `host` resolves to that the address rule accepts.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Failed> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| {
                    Failed(
                        Error::DnsError {
                            rcode: None,
                            info_code: None,
                        },
                        format!("{host} does not resolve: {e}"),
                    )
                })?
                .collect(),
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match check_address(a.ip(), &self.limits.allow_nets) {
                Ok(()) => true,
                Err(kind) => {
                    refused.get_or_insert((a.ip(), kind));
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some((ip, kind))) => Err(Failed(
                Error::DestinationIpProhibited,
                format!(
                    "refused: {host} resolves to {ip}, a {kind} address, outside the ranges the operator allowed (PICLOUD_OUTBOUND_ALLOW_NETS)"
                ),
            )),
            (true, None) => Err(Failed(
                Error::DestinationNotFound,
                format!("{host} resolves to no address"),
            )),
        }
    }
}

/// What drives a connection after the response has begun.
type Driver = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// The first of `addrs` that accepts a connection.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, Failed> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some((*addr, e)),
        }
    }
    let (addr, e) = last.expect("resolve returns at least one address");
    let error = if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Error::ConnectionRefused
    } else {
        Error::Connect(e)
    };
    Err(Failed(error, format!("cannot connect to {addr}")))
}

/// TLS over `stream`, verifying the certificate for `host` against the
/// Mozilla roots (webpki-roots), as wasmtime's default sender does.
async fn tls(
    host: &str,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failed> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
            Failed(
                Error::TlsCertificateError,
                format!("'{host}' is not a TLS name"),
            )
        })?,
    };
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
        .map_err(|e| Failed(Error::TlsProtocolError, format!("TLS failed: {e}")))
}

/// One request's time bound.
struct Bound {
    outbound: Arc<Outbound>,
    ends: Instant,
    /// Whether the per-request timeout is what ends it (a named limit).
    named: bool,
    /// Method and URL without query, as the log and errors show it.
    request: String,
    host: String,
    https: bool,
}

impl Bound {
    /// `step`, unless the request's time runs out first.
    async fn wait<T>(&self, step: impl Future<Output = T>) -> Result<T, Failed> {
        tokio::time::timeout_at(self.ends, step)
            .await
            .map_err(|_| self.timed_out())
    }

    fn timed_out(&self) -> Failed {
        let why = if self.named {
            self.outbound.trip(LimitExceeded::OutboundTimeout {
                ms: self.outbound.limits.timeout.as_millis() as u64,
                request: self.request.clone(),
            })
        } else {
            "the request ran out of time".to_owned()
        };
        Failed(Error::ConnectionReadTimeout, why)
    }
}

/// A request body that, dropped before its end (the request was refused,
/// or hyper sent a GET without reading it), reads the rest on a task of its
/// own until the invocation's deadline: the guest may still be writing it,
/// and a closed stream would hide the request's real outcome from it.
struct Drained {
    body: Option<WasiBody>,
    until: Instant,
    ended: bool,
}

impl Drained {
    fn new(body: WasiBody, until: Instant) -> Drained {
        Drained {
            body: Some(body),
            until,
            ended: false,
        }
    }
}

impl Body for Drained {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let (Some(body), false) = (self.body.take(), self.ended) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let until = self.until;
            runtime.spawn(async move {
                let _ = tokio::time::timeout_at(until, body.collect()).await;
            });
        }
    }
}

/// A response body bounded in size and time.
struct LimitedBody {
    incoming: Incoming,
    read: u64,
    limit: u64,
    timer: Pin<Box<Sleep>>,
    bound: Bound,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                    if self.read > self.limit {
                        let limit = self.limit;
                        let request = self.bound.request.clone();
                        let why = self
                            .bound
                            .outbound
                            .trip(LimitExceeded::OutboundBody { limit, request });
                        self.bound
                            .outbound
                            .note(LogLevel::Warn, format!("http {why}"));
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if self.timer.as_mut().poll(cx).is_ready() {
                    let Failed(error, why) = self.bound.timed_out();
                    self.bound
                        .outbound
                        .note(LogLevel::Warn, format!("http {why}"));
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// `scheme://host[:port]/path`: the URL without its query or credentials.
fn shown_url(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let host = uri.host().unwrap_or("");
    let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", uri.path())
}

/// The hooks `wasmtime-wasi-http` calls: the invocation's [`Outbound`].
pub(super) struct Hooks(pub Arc<Outbound>);

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Driver), Error>> + Send> {
        Box::new(self.0.clone().send(request, options))
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn a_shown_url_has_no_query_or_credentials() {
        let uri: http::Uri = "https://user:pw@api.example.com:8443/hook/1?token=s3cret"
            .parse()
            .unwrap();
        assert_eq!(shown_url(&uri), "https://api.example.com:8443/hook/1");
    }
}
