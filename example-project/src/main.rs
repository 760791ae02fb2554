//! `greeter`: a tiny HTTP/1.1 hello service using only the standard library.
//!
//! * `GET /`        -> `hello from greeter <version>\n`
//! * `GET /healthz` -> `ok`
//!
//! Listens on `0.0.0.0:$PORT` (default 8080). `greeter --once` prints the greeting
//! to stdout and exits, which is handy for `docker run` without networking.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn greeting() -> String {
    format!("hello from greeter {VERSION}")
}

/// Maps a request line (`GET /path HTTP/1.1`) to a status line and a body.
fn route(request_line: &str) -> (&'static str, String) {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/") => ("200 OK", format!("{}\n", greeting())),
        ("GET" | "HEAD", "/healthz") => ("200 OK", "ok".to_string()),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
    }
}

fn handle(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; this server never reads a request body.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let (status, body) = route(&request_line);
    let head_only = request_line.starts_with("HEAD ");
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "--once") {
        println!("{}", greeting());
        return;
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let addr = format!("0.0.0.0:{port}");
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("greeter: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("greeter {VERSION} listening on {addr}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    if let Err(e) = handle(stream) {
                        eprintln!("greeter: connection error: {e}");
                    }
                });
            }
            Err(e) => eprintln!("greeter: accept failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn routes() {
        assert_eq!(
            route("GET / HTTP/1.1\r\n"),
            ("200 OK", format!("hello from greeter {VERSION}\n"))
        );
        assert_eq!(
            route("GET /healthz HTTP/1.1\r\n"),
            ("200 OK", "ok".to_string())
        );
        assert_eq!(route("GET /nope HTTP/1.1\r\n").0, "404 Not Found");
        assert_eq!(route("POST / HTTP/1.1\r\n").0, "405 Method Not Allowed");
    }

    #[test]
    fn serves_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            handle(stream).unwrap();
        });
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).unwrap();
        server.join().unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok"), "{response}");
    }
}
