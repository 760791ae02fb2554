//! One connected client per registry for the whole run, so pings, credential lookups and
//! tokens are not repeated for every blob, and one HTTP client (TLS roots read once) for all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::client::RegistryClient;
use super::error::RegistryError;
use super::http_client::http_client;
use super::options::{ClientOptions, Hooks};
use crate::reference::{Registry, Scheme};

/// A registry as connections see it: its API authority and the scheme it asked for, if any.
type Key = (String, Option<Scheme>);

pub struct Clients {
    options: ClientOptions,
    /// Given to every client made here.
    hooks: Hooks,
    /// Built on first use, off the async runtime (it reads the system's CA certificates).
    http: OnceCell<reqwest::Client>,
    /// One cell per registry. The map's lock is held only to find or add a cell, never across
    /// a connect, so a slow registry does not hold up the others; callers asking for the same
    /// registry at once wait for the one connect in its cell.
    connected: Mutex<HashMap<Key, Arc<OnceCell<Arc<RegistryClient>>>>>,
    /// The registries pushed to (as `host[:port]`): the keychain is told, so it can keep
    /// credentials meant for push targets (a CI job's push token) from every other registry
    /// (a base image's).
    push_targets: Mutex<std::collections::HashSet<String>>,
}

impl Clients {
    pub fn new(options: ClientOptions, hooks: Hooks) -> Clients {
        Clients {
            options,
            hooks,
            http: OnceCell::new(),
            connected: Mutex::new(HashMap::new()),
            push_targets: Mutex::new(Default::default()),
        }
    }

    /// Records that images are pushed to `registry`, before any client for it is made.
    pub fn add_push_target(&self, registry: &Registry) {
        self.push_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.authority());
    }

    fn is_push_target(&self, registry: &Registry) -> bool {
        self.push_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&registry.authority())
    }

    /// The client for `registry`, connecting on first use. A failed connect is not remembered:
    /// the next caller tries again.
    pub async fn get(&self, registry: &Registry) -> Result<Arc<RegistryClient>, RegistryError> {
        let key: Key = (registry.api_authority(), registry.scheme());
        let cell = self
            .connected
            .lock()
            // Nothing can be left half-done under this lock: take it even after a panic.
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let http = self.http().await?;
            let push_target = self.is_push_target(registry);
            RegistryClient::connect(registry, &self.options, &self.hooks, http, push_target).await
        })
        .await
        .cloned()
    }

    /// The shared HTTP client. Building it reads CA files, so it runs on a blocking thread.
    async fn http(&self) -> Result<reqwest::Client, RegistryError> {
        self.http
            .get_or_try_init(|| async {
                let (options, events) = (self.options.clone(), self.hooks.events.clone());
                tokio::task::spawn_blocking(move || http_client(&options, &events))
                    .await
                    .map_err(|e| {
                        RegistryError::TlsSetup(format!("the TLS set-up did not finish: {e}"))
                    })?
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::registry::events::{Event, Events, Sink};
    use crate::registry::options::RetryPolicy;

    /// Accepts connections and never answers.
    fn silent() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                held.push(s);
            }
        });
        addr
    }

    /// Answers every request with 200 and an empty body, like `/v2/` of an open registry.
    fn open_registry() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            let _ =
                                writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_registry_does_not_hold_up_the_others() {
        let clients = Arc::new(Clients::new(
            ClientOptions {
                retry: RetryPolicy::with_bounds(Some(1), Some(3)),
                ..ClientOptions::default()
            },
            Hooks::default(),
        ));
        let slow = Registry::parse(&silent()).unwrap();
        let fast = Registry::parse(&open_registry()).unwrap();

        let c = clients.clone();
        let stuck = tokio::spawn(async move { c.get(&slow).await.map(|_| ()) });
        // Let the slow connect start (and take whatever it takes).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let client = clients.get(&fast).await.expect("the open registry answers");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited {:?} behind the silent registry",
            started.elapsed()
        );
        assert!(
            !stuck.is_finished(),
            "the silent registry cannot have answered"
        );
        // The same registry again is the same client.
        let again = clients.get(&fast).await.unwrap();
        assert!(Arc::ptr_eq(&client, &again));
        assert!(stuck.await.unwrap().is_err());
    }

    /// Keeps the text of every event it is sent.
    #[derive(Default)]
    struct Capture(Mutex<Vec<String>>);

    impl Sink for Capture {
        fn event(&self, event: Event) {
            let (Event::Detail(text) | Event::Warn(text) | Event::Trace(text)) = event;
            self.0.lock().unwrap().push(text);
        }

        fn tracing(&self) -> bool {
            true
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_pool_hears_only_its_own_clients() {
        for _round in 0..5 {
            let (a, b) = (open_registry(), open_registry());
            let (heard_a, heard_b) = (Arc::new(Capture::default()), Arc::new(Capture::default()));
            let pool = |sink: Arc<Capture>| {
                Clients::new(
                    ClientOptions::default(),
                    Hooks {
                        events: Events::to(sink),
                        ..Hooks::default()
                    },
                )
            };
            let (pool_a, pool_b) = (pool(heard_a.clone()), pool(heard_b.clone()));
            let (registry_a, registry_b) =
                (Registry::parse(&a).unwrap(), Registry::parse(&b).unwrap());
            // Both connect at once, each tracing its requests.
            let (client_a, client_b) =
                tokio::join!(pool_a.get(&registry_a), pool_b.get(&registry_b));
            client_a.unwrap();
            client_b.unwrap();
            for (heard, own, other) in [(&heard_a, &a, &b), (&heard_b, &b, &a)] {
                let heard = heard.0.lock().unwrap().clone();
                assert!(heard.iter().any(|e| e.contains(own.as_str())), "{heard:?}");
                assert!(
                    !heard.iter().any(|e| e.contains(other.as_str())),
                    "{heard:?}"
                );
            }
        }
    }

    #[test]
    fn keys_tell_schemes_apart() {
        let plain = Registry::parse("127.0.0.1:5000").unwrap();
        let http = Registry::parse("http://127.0.0.1:5000").unwrap();
        let a: Key = (plain.api_authority(), plain.scheme());
        let b: Key = (http.api_authority(), http.scheme());
        assert_eq!(a.0, b.0);
        assert_ne!(a, b);
    }
}
