//! TCP level: a forwarder that resets, cuts and throttles connections.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Acceptor, Open};

/// What the TCP proxy breaks.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpFaults {
    /// Reset connections number N, 2N, 3N… (1-based); 0: never.
    pub reset_every: usize,
    /// Cut a connection once this many bytes went from the client to the registry on it; 0:
    /// never.
    pub cut_after: u64,
    /// How many connections to cut that way (the first ones to pass `cut_after`).
    pub cuts: usize,
    /// Client-to-registry bandwidth in bytes per second; 0: unlimited.
    pub throttle: u64,
}

/// What a proxy did so far.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicUsize,
    pub resets: AtomicUsize,
    pub cuts: AtomicUsize,
    /// Bytes forwarded from clients to the registry.
    pub upstream_bytes: AtomicU64,
}

impl Stats {
    pub fn summary(&self) -> String {
        format!(
            "connections={} resets={} cuts={} upstream_bytes={}",
            self.connections.load(Ordering::SeqCst),
            self.resets.load(Ordering::SeqCst),
            self.cuts.load(Ordering::SeqCst),
            self.upstream_bytes.load(Ordering::SeqCst)
        )
    }
}

/// A TCP forwarder to `target` that breaks connections as [`TcpFaults`] says.
pub struct FaultProxy {
    pub port: u16,
    pub stats: Arc<Stats>,
    _acceptor: Acceptor,
}

impl FaultProxy {
    pub fn start(target: &str, faults: TcpFaults) -> FaultProxy {
        Self::bind("127.0.0.1:0", target, faults).expect("bind the fault proxy")
    }

    pub fn bind(listen: &str, target: &str, faults: TcpFaults) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen)?;
        let port = listener.local_addr()?.port();
        let stats = Arc::new(Stats::default());
        let target = target.to_string();
        let s = stats.clone();
        let acceptor = Acceptor::start(listener, move |id, client, open| {
            handle_tcp(id, client, &target, faults, &s, &open)
        });
        Ok(FaultProxy {
            port,
            stats,
            _acceptor: acceptor,
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn handle_tcp(
    id: usize,
    client: TcpStream,
    target: &str,
    faults: TcpFaults,
    stats: &Stats,
    open: &Open,
) {
    let n = stats.connections.fetch_add(1, Ordering::SeqCst) + 1;
    if faults.reset_every > 0 && n.is_multiple_of(faults.reset_every) {
        // Wait for the request to arrive, then close with it unread: the kernel answers with
        // a reset (RST), as a crashing middlebox would.
        let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
        // (No clone of this socket may stay open anywhere, or the close would not happen.)
        let mut one = [0u8; 1];
        let _ = (&client).read(&mut one);
        stats.resets.fetch_add(1, Ordering::SeqCst);
        drop(client);
        return;
    }
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    if let (Ok(a), Ok(b)) = (client.try_clone(), upstream.try_clone()) {
        open.lock().unwrap().entry(id).or_default().extend([a, b]);
    }
    // Registry to client: plain copy, on its own thread.
    let down = std::thread::spawn(move || {
        let (mut from, mut to) = (upstream2, client2);
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    // Client to registry: counted, throttled, maybe cut.
    let (mut from, mut to) = (client, upstream);
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent: u64 = 0;
    let started = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        stats.upstream_bytes.fetch_add(n as u64, Ordering::SeqCst);
        if faults.cut_after > 0 && sent >= faults.cut_after && claim(&stats.cuts, faults.cuts) {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            break;
        }
        if faults.throttle > 0 {
            let due = Duration::from_secs_f64(sent as f64 / faults.throttle as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = down.join();
}

/// Takes one of `limit` tokens from `counter`; false when none is left.
fn claim(counter: &AtomicUsize, limit: usize) -> bool {
    let mut current = counter.load(Ordering::SeqCst);
    while current < limit {
        match counter.compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
    false
}
