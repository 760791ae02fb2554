//! Loopback forwarders that stand in for other addresses of a registry.
//!
//! * [`CountingProxy`]: a TCP forwarder that counts connections; it stands in for the
//!   cluster's `internal` registry address, to prove the tool never contacts it during a push
//!   while the printed reference still resolves through it.
//! * [`PathRewritingProxy`]: an HTTP/1.1 proxy on loopback that serves a registry under another
//!   repository path (`/v2/proxy/team/app/...` → `/v2/team/app/...`). It stands in for a
//!   pull-through cache or mirror (Harbor proxy-cache project, GitLab dependency proxy): a second
//!   address with a different path that serves the same digests. One request per connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Forwards TCP connections from `127.0.0.1:port` to `target`, counting accepted connections.
/// Stops (and cuts open connections) on drop.
pub struct CountingProxy {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    open: OpenConnections,
    acceptor: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Starts forwarding to `target` (e.g. `registry.addr()`).
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy on 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy local addr").port();
        listener
            .set_nonblocking(true)
            .expect("set proxy listener non-blocking");
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let open: OpenConnections = Arc::new(Mutex::new(HashMap::new()));

        let acceptor = {
            let (target, connections, stop, open) = (
                target.to_string(),
                connections.clone(),
                stop.clone(),
                open.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let id = connections.fetch_add(1, Ordering::SeqCst);
                            forward(id, client, &target, &open);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => {
                            eprintln!("CountingProxy: accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        };

        CountingProxy {
            port,
            connections,
            stop,
            open,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`, the address that stands in for the cluster's registry address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Open connections by id: (client side, upstream side), for cutting them on drop.
type OpenConnections = Arc<Mutex<HashMap<usize, (TcpStream, TcpStream)>>>;

/// Pipes `client` <-> a new connection to `target` in two threads.
fn forward(id: usize, client: TcpStream, target: &str, open: &OpenConnections) {
    // The listener is non-blocking; accepted sockets must not be.
    let _ = client.set_nonblocking(false);
    let upstream = match TcpStream::connect(target) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("CountingProxy: cannot connect to {target}: {e}");
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let clones = || -> io::Result<_> {
        Ok((
            client.try_clone()?,
            upstream.try_clone()?,
            client.try_clone()?,
            upstream.try_clone()?,
        ))
    };
    let Ok((client2, upstream2, client3, upstream3)) = clones() else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    open.lock().unwrap().insert(id, (client3, upstream3));
    let remaining = Arc::new(AtomicUsize::new(2));
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        let (open, remaining) = (open.clone(), remaining.clone());
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
            if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                open.lock().unwrap().remove(&id);
            }
        });
    };
    pipe(client, upstream);
    pipe(upstream2, client2);
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, (client, upstream)) in self.open.lock().unwrap().drain() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

/// An HTTP/1.1 proxy serving a registry under another repository path (see the module docs).
pub struct PathRewritingProxy {
    pub port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl PathRewritingProxy {
    /// Serves `target` (host:port), with repository paths under `/v2/{from}/` read from
    /// `/v2/{to}/` (`to` may be empty: the registry's root).
    pub fn start(target: &str, from: &str, to: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind path proxy");
        let port = listener.local_addr().expect("path proxy addr").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let from = format!("/v2/{from}/");
        let to = if to.is_empty() {
            "/v2/".to_string()
        } else {
            format!("/v2/{to}/")
        };
        let (target, count, halt) = (target.to_string(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (target, from, to, count) =
                            (target.clone(), from.clone(), to.clone(), count.clone());
                        std::thread::spawn(move || {
                            let _ = serve(client, &target, &from, &to, &count);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PathRewritingProxy {
            port,
            requests,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for PathRewritingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    mut client: TcpStream,
    target: &str,
    from: &str,
    to: &str,
    count: &AtomicUsize,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    // Read the request head (GET and HEAD only need it; a body is passed on as it comes).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    count.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, ' ');
    let (method, path, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = match path.strip_prefix(from) {
        Some(rest) => format!("{to}{rest}"),
        None => path.to_string(),
    };
    let mut upstream_head = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            upstream_head.push_str(line);
            upstream_head.push_str("\r\n");
        }
    }
    upstream_head.push_str("Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(target)?;
    upstream.write_all(upstream_head.as_bytes())?;
    let mut up_read = upstream.try_clone()?;
    let mut client_write = client.try_clone()?;
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Both);
    });
    let _ = std::io::copy(&mut client, &mut upstream);
    let _ = back.join();
    Ok(())
}
