//! HTTP/1.1 level: answers chosen requests with injected statuses, forwards and logs the rest.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Acceptor, Open};

/// An answer the proxy gives instead of forwarding a request.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    /// `Retry-After` in seconds.
    pub retry_after: Option<u64>,
    /// The JSON error body; a generic one when `None`.
    pub body: Option<String>,
    /// A `WWW-Authenticate` header to send (with a 401).
    pub challenge: Option<String>,
    /// More headers to send (a redirect's `Location`). A `Content-Length` here replaces the
    /// body's: for answers to HEAD, which carry no body.
    pub headers: Vec<(String, String)>,
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        Fault {
            status,
            retry_after: None,
            body: None,
            challenge: None,
            headers: Vec::new(),
        }
    }

    /// A 401 with `WWW-Authenticate: challenge`.
    pub fn unauthorized(challenge: &str) -> Fault {
        Fault {
            challenge: Some(challenge.to_string()),
            ..Fault::status(401)
        }
    }

    pub fn retry_after(status: u16, seconds: u64) -> Fault {
        Fault {
            retry_after: Some(seconds),
            ..Fault::status(status)
        }
    }

    /// A distribution-style error body: `{"errors":[{"code","message"}]}`.
    pub fn error(status: u16, code: &str, message: &str) -> Fault {
        Fault {
            body: Some(format!(
                r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#
            )),
            ..Fault::status(status)
        }
    }
}

/// Statuses to inject. Requests that match (`method`, a substring of `path`; `None` matches
/// all) are numbered from 0 over all connections; number `n` with `n % period` in
/// `offset..offset + burst.len()` is answered with `burst[n % period - offset]` instead of
/// being forwarded.
#[derive(Debug, Clone, Default)]
pub struct HttpFaults {
    pub period: usize,
    pub offset: usize,
    pub burst: Vec<Fault>,
    pub method: Option<String>,
    pub path_contains: Option<String>,
    /// Only requests whose Content-Type contains this (e.g. an OCI manifest's media type).
    pub content_type_contains: Option<String>,
}

impl HttpFaults {
    fn matches(&self, method: &str, path: &str, content_type: &str) -> bool {
        self.content_type_contains
            .as_deref()
            .is_none_or(|c| content_type.contains(c))
            && self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }

    fn pick(&self, n: usize) -> Option<&Fault> {
        if self.period == 0 {
            return None;
        }
        let i = (n % self.period).checked_sub(self.offset)?;
        self.burst.get(i)
    }
}

/// One request the HTTP proxy handled.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub injected: bool,
    /// Whether the request carried an Authorization header (never its value).
    pub authorized: bool,
    /// The request's User-Agent.
    pub user_agent: Option<String>,
}

/// An HTTP/1.1 proxy to `target` that injects statuses as [`HttpFaults`] says.
pub struct HttpFaultProxy {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Exchange>>>,
    _acceptor: Acceptor,
}

impl HttpFaultProxy {
    pub fn start(target: &str, faults: HttpFaults) -> HttpFaultProxy {
        Self::start_rewriting(target, faults, None)
    }

    /// Like [`HttpFaultProxy::start`], and in every response's `Location` header replaces the
    /// text `rewrite.0` with `rewrite.1` (a registry pointing uploads to another host). In
    /// `rewrite.0`, `{self}` stands for the proxy's own `127.0.0.1:port`.
    pub fn start_rewriting(
        target: &str,
        faults: HttpFaults,
        rewrite: Option<(String, String)>,
    ) -> HttpFaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTTP fault proxy");
        let port = listener.local_addr().unwrap().port();
        let rewrite =
            rewrite.map(|(from, to)| (from.replace("{self}", &format!("127.0.0.1:{port}")), to));
        let log = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicUsize::new(0));
        let (target, l) = (target.to_string(), log.clone());
        let acceptor = Acceptor::start(listener, move |id, client, open| {
            let _ = handle_http(
                id,
                client,
                &target,
                &faults,
                &counter,
                &l,
                &open,
                rewrite.as_ref(),
            );
        });
        HttpFaultProxy {
            port,
            log,
            _acceptor: acceptor,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }
}

struct Head {
    raw: Vec<u8>,
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a message head; `None` at a clean end of stream.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first_line = String::new();
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if first_line.is_empty() {
            if text.is_empty() {
                continue;
            }
            first_line = text;
            continue;
        }
        if text.is_empty() {
            return Ok(Some(Head {
                raw,
                first_line,
                headers,
            }));
        }
        if let Some((k, v)) = text.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

/// Reads a body as framed by `head` (chunked or Content-Length), raw, for forwarding.
/// `to_eof`: no framing and the body runs to the end of the stream (responses only).
fn read_body(r: &mut impl BufRead, head: &Head, to_eof: bool) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            body.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(text.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t)?;
                    body.extend_from_slice(&t);
                    if t == b"\r\n" || t == b"\n" || t.is_empty() {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..])?;
        }
    }
    if let Some(len) = head
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if to_eof {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_http(
    id: usize,
    client: TcpStream,
    target: &str,
    faults: &HttpFaults,
    counter: &AtomicUsize,
    log: &Mutex<Vec<Exchange>>,
    open: &Open,
    rewrite: Option<&(String, String)>,
) -> io::Result<()> {
    open.lock()
        .unwrap()
        .entry(id)
        .or_default()
        .push(client.try_clone()?);
    let mut client_in = BufReader::new(client.try_clone()?);
    let mut client_out = client;
    let mut upstream: Option<(TcpStream, BufReader<TcpStream>)> = None;
    loop {
        let Some(request) = read_head(&mut client_in)? else {
            return Ok(());
        };
        let body = read_body(&mut client_in, &request, false)?;
        let mut parts = request.first_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let authorized = request.get("authorization").is_some();
        let user_agent = request.get("user-agent").map(str::to_string);
        let content_type = request.get("content-type").unwrap_or("").to_string();
        let fault = if faults.matches(&method, &path, &content_type) {
            faults.pick(counter.fetch_add(1, Ordering::SeqCst))
        } else {
            None
        };
        if let Some(fault) = fault {
            let (status, retry_after) = (fault.status, fault.retry_after);
            let text = fault.body.clone().unwrap_or_else(|| {
                format!(
                    r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected {status} by the test proxy"}}]}}"#
                )
            });
            let length = fault
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(text.len().to_string(), |(_, v)| v.clone());
            let mut response = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n",
                reason(status),
            );
            if let Some(s) = retry_after {
                response.push_str(&format!("Retry-After: {s}\r\n"));
            }
            if let Some(c) = &fault.challenge {
                response.push_str(&format!("WWW-Authenticate: {c}\r\n"));
            }
            for (k, v) in &fault.headers {
                if !k.eq_ignore_ascii_case("content-length") {
                    response.push_str(&format!("{k}: {v}\r\n"));
                }
            }
            response.push_str("\r\n");
            if method != "HEAD" {
                response.push_str(&text);
            }
            client_out.write_all(response.as_bytes())?;
            log.lock().unwrap().push(Exchange {
                at: Instant::now(),
                method,
                path,
                status,
                injected: true,
                authorized,
                user_agent,
            });
            continue;
        }
        if upstream.is_none() {
            let s = TcpStream::connect(target)?;
            let _ = s.set_nodelay(true);
            open.lock()
                .unwrap()
                .entry(id)
                .or_default()
                .push(s.try_clone()?);
            let reader = BufReader::new(s.try_clone()?);
            upstream = Some((s, reader));
        }
        let (up_out, up_in) = upstream.as_mut().expect("connected above");
        up_out.write_all(&request.raw)?;
        up_out.write_all(&body)?;
        let Some(response) = read_head(up_in)? else {
            return Ok(());
        };
        let status: u16 = response
            .first_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let bodiless = method == "HEAD" || status == 204 || status == 304 || status < 200;
        let framed =
            response.get("content-length").is_some() || response.get("transfer-encoding").is_some();
        let response_body = if bodiless {
            Vec::new()
        } else {
            read_body(up_in, &response, true)?
        };
        match rewrite {
            Some((from, to)) => {
                let head = String::from_utf8_lossy(&response.raw);
                let rewritten: String = head
                    .split_inclusive('\n')
                    .map(|line| {
                        if line.to_ascii_lowercase().starts_with("location:") {
                            line.replace(from.as_str(), to)
                        } else {
                            line.to_string()
                        }
                    })
                    .collect();
                client_out.write_all(rewritten.as_bytes())?;
            }
            None => client_out.write_all(&response.raw)?,
        }
        client_out.write_all(&response_body)?;
        log.lock().unwrap().push(Exchange {
            at: Instant::now(),
            method,
            path,
            status,
            injected: false,
            authorized,
            user_agent,
        });
        let close = response
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || (!bodiless && !framed);
        if close {
            return Ok(());
        }
    }
}
