//! A tiny std-only HTTP/1.1 client (plain TCP, no TLS) for looking into registries.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Accept header that asks a registry for a single-image manifest, OCI or Docker v2.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Accept header that also allows image indexes / manifest lists.
pub const ANY_MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// `(status, headers, body)`; header names are as the server sent them.
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// `GET http://{addr}{path}` with `Connection: close`; `accept` may be empty. Panics on I/O
/// errors (not on HTTP error statuses).
pub fn http_get(addr: &str, path: &str, accept: &str) -> HttpResponse {
    let headers: Vec<(&str, &str)> = if accept.is_empty() {
        Vec::new()
    } else {
        vec![("Accept", accept)]
    };
    http_request(addr, "GET", path, &headers)
}

/// Any bodiless request (GET, HEAD, DELETE) with extra headers, e.g. `Authorization`.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    try_http_request(addr, method, path, headers, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path} failed: {e}"))
}

/// Case-insensitive header lookup.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Like [`http_request`] but returns I/O and protocol errors; `timeout` bounds connect and
/// each read/write.
pub fn try_http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let sock: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| io::Error::other(format!("no address for {addr}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("User-Agent: adapt-push-tests\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    stream.flush()?;

    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad HTTP status line: {line:?}")))?;

    let mut response_headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            response_headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }

    let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
    let chunked = header(&response_headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header(&response_headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    let mut body = Vec::new();
    if no_body {
    } else if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size_hex = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| io::Error::other(format!("bad chunk size line: {line:?}")))?;
            if size == 0 {
                break; // trailers, if any, are ignored
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((status, response_headers, body))
}
