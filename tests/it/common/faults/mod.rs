//! Fault-injecting proxies in front of a registry, std only. Used by the registry fault tests
//! (`tests/it/common`, `mod faults`) and by `examples/fault-proxy` for `scripts/bench-faults`.
//!
//! * [`FaultProxy`]: TCP level. Resets every Nth connection (after its first bytes arrive),
//!   cuts the first K connections that carry more than B bytes towards the registry (an upload
//!   broken midway), and can throttle that direction (to kill a push midway).
//! * [`HttpFaultProxy`]: HTTP/1.1 level (keep-alive, Content-Length and chunked bodies). Answers
//!   requests by number with injected statuses (503 / 429 bursts with `Retry-After`) instead of
//!   forwarding them, and logs every exchange.
//!
//! Everything listens on 127.0.0.1 unless told otherwise.
#![allow(dead_code)]

mod http_level;
mod tcp_level;

// examples/fault-proxy uses only the TCP level.
#[allow(unused_imports)]
pub use self::http_level::*;
pub use self::tcp_level::*;

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) type Open = Arc<Mutex<HashMap<usize, Vec<TcpStream>>>>;

/// Shared accept loop: runs `handle(id, stream)` on a thread per connection until stopped.
pub(crate) struct Acceptor {
    stop: Arc<AtomicBool>,
    open: Open,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub(crate) fn start(
        listener: TcpListener,
        handle: impl Fn(usize, TcpStream, Open) + Send + Sync + 'static,
    ) -> Acceptor {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let open: Open = Arc::new(Mutex::new(HashMap::new()));
        let handle = Arc::new(handle);
        let thread = {
            let (stop, open) = (stop.clone(), open.clone());
            std::thread::spawn(move || {
                let mut id = 0;
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            id += 1;
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_nodelay(true);
                            let (handle, open, n) = (handle.clone(), open.clone(), id);
                            std::thread::spawn(move || {
                                handle(n, stream, open.clone());
                                if let Some(streams) = open.lock().unwrap().remove(&n) {
                                    for s in streams {
                                        let _ = s.shutdown(Shutdown::Both);
                                    }
                                }
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Acceptor {
            stop,
            open,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (_, streams) in self.open.lock().unwrap().drain() {
            for s in streams {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}
