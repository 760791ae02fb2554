//! KEP-1755: a local cluster says where its registry is in the ConfigMap
//! `kube-public/local-registry-hosting`, key `localRegistryHosting.v1`. `host` is where to push
//! from the host (our `external`); `hostFromContainerRuntime` is what the nodes' runtime pulls
//! (our `internal`; `host` when absent). Read from the cluster of a kubeconfig context with
//! kube-rs, or from a file holding the ConfigMap (or just the `localRegistryHosting.v1` YAML).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

pub const NAMESPACE: &str = "kube-public";
pub const CONFIGMAP: &str = "local-registry-hosting";
pub const KEY: &str = "localRegistryHosting.v1";
/// An unreachable API server is given up on within this.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to read the ConfigMap from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// The cluster of a kubeconfig context (`None`: the current context).
    Cluster {
        context: Option<String>,
    },
    File(PathBuf),
}

/// The two addresses the ConfigMap gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosting {
    pub external: String,
    pub internal: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("no kubeconfig to read the cluster's registry from: {reason}")]
    NoKubeconfig { reason: String },
    #[error("kubeconfig context {context}: {reason}")]
    Context { context: String, reason: String },
    #[error("cannot reach the Kubernetes API server {server} (context {context}): {cause}")]
    Unreachable {
        context: String,
        server: String,
        cause: String,
    },
    #[error(
        "the cluster of context {context} ({server}) has no ConfigMap {NAMESPACE}/{CONFIGMAP}: it does not publish a local registry (KEP-1755)"
    )]
    Missing { context: String, server: String },
    #[error("{source_name}: {reason}")]
    Malformed { source_name: String, reason: String },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

impl ClusterError {
    /// What to do next.
    pub fn help(&self) -> String {
        match self {
            ClusterError::NoKubeconfig { .. } => "set KUBECONFIG, or create the cluster (kind, k3d, minikube write ~/.kube/config); or give the registry: registry = { local-registry-hosting = \"configmap.yaml\" } or --registry-external/--registry-internal".into(),
            ClusterError::Context { .. } => "name a context of your kubeconfig with --kube-context (`kubectl config get-contexts` lists them)".into(),
            ClusterError::Unreachable { .. } => "is the cluster running? `kubectl cluster-info` checks the same server".into(),
            ClusterError::Missing { .. } => "kind, k3d, minikube and microk8s publish it when set up with a local registry; otherwise give the registry addresses directly".into(),
            ClusterError::Malformed { .. } => format!("{KEY} must be YAML with `host` (and optionally `hostFromContainerRuntime`), e.g. host: \"localhost:5001\""),
            ClusterError::File { .. } => format!("give a ConfigMap as `kubectl get -n {NAMESPACE} configmap {CONFIGMAP} -o yaml` writes it"),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1 {
    host: Option<String>,
    host_from_container_runtime: Option<String>,
}

/// The addresses from a `localRegistryHosting.v1` document; `source_name` is for messages.
pub fn parse_v1(text: &str, source_name: &str) -> Result<Hosting, ClusterError> {
    let malformed = |reason: String| ClusterError::Malformed {
        source_name: source_name.to_string(),
        reason,
    };
    let v1: V1 =
        serde_yaml::from_str(text).map_err(|e| malformed(format!("{KEY} is not valid: {e}")))?;
    let host = v1
        .host
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| malformed(format!("{KEY} has no `host`")))?;
    let internal = v1
        .host_from_container_runtime
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| host.clone());
    Ok(Hosting {
        external: host,
        internal,
    })
}

/// A ConfigMap file (or a bare `localRegistryHosting.v1` document).
pub fn parse_file(text: &str, path: &str) -> Result<Hosting, ClusterError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ClusterError::File {
        path: path.to_string(),
        reason: format!("not valid YAML: {e}"),
    })?;
    if value.get("host").is_some() {
        return parse_v1(text, path);
    }
    match value.get("data").and_then(|d| d.get(KEY)) {
        Some(serde_yaml::Value::String(v1)) => parse_v1(v1, path),
        Some(_) => Err(ClusterError::Malformed {
            source_name: path.to_string(),
            reason: format!("data.{KEY} must be a string holding YAML"),
        }),
        None => Err(ClusterError::File {
            path: path.to_string(),
            reason: format!("no data.{KEY} (nor a `host`): not a local-registry-hosting ConfigMap"),
        }),
    }
}

/// Reads the ConfigMap from the cluster a kubeconfig context names.
async fn from_cluster(context: Option<&str>) -> Result<Hosting, ClusterError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::config::{KubeConfigOptions, Kubeconfig};

    // kube's rustls client needs a process-wide provider; ours is ring, as everywhere else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read().map_err(|e| ClusterError::NoKubeconfig {
        reason: match std::env::var_os("KUBECONFIG") {
            Some(k) => format!("KUBECONFIG={}: {e}", k.to_string_lossy()),
            None => format!("~/.kube/config: {e}"),
        },
    })?;
    let context_name = context
        .map(String::from)
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_else(|| "(none)".into());
    if let Some(c) = context
        && !kubeconfig.contexts.iter().any(|n| n.name == c)
    {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        return Err(ClusterError::Context {
            context: c.to_string(),
            reason: format!("not in the kubeconfig (it has: {})", known.join(", ")),
        });
    }
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| ClusterError::Context {
            context: context_name.clone(),
            reason: e.to_string(),
        })?;
    config.connect_timeout = Some(API_TIMEOUT);
    config.read_timeout = Some(API_TIMEOUT);
    config.write_timeout = Some(API_TIMEOUT);
    let server = config.cluster_url.to_string();
    let unreachable = |cause: String| ClusterError::Unreachable {
        context: context_name.clone(),
        server: server.clone(),
        cause,
    };
    let client = kube::Client::try_from(config).map_err(|e| unreachable(error_chain(&e)))?;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, NAMESPACE);
    let found = tokio::time::timeout(API_TIMEOUT * 2, api.get_opt(CONFIGMAP))
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", (API_TIMEOUT * 2).as_secs())))?
        .map_err(|e| unreachable(error_chain(&e)))?;
    let Some(map) = found else {
        return Err(ClusterError::Missing {
            context: context_name,
            server,
        });
    };
    let source_name =
        format!("ConfigMap {NAMESPACE}/{CONFIGMAP} in context {context_name} ({server})");
    let v1 = map
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .ok_or_else(|| ClusterError::Malformed {
            source_name: source_name.clone(),
            reason: format!("no data.{KEY}"),
        })?;
    parse_v1(v1, &source_name)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Reads each source once: owned by one run, which asks each cluster or file once however many
/// packages name it. Planning is synchronous; the cluster is asked on a thread of its own with
/// its own small runtime, so this works from inside or outside async code.
#[derive(Default)]
pub struct Lookups {
    cache: Mutex<HashMap<Source, Result<Hosting, ClusterError>>>,
}

impl Lookups {
    pub fn get(&self, source: &Source) -> Result<Hosting, ClusterError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = cache.get(source) {
            return found.clone();
        }
        let result = read(source);
        cache.insert(source.clone(), result.clone());
        result
    }
}

fn read(source: &Source) -> Result<Hosting, ClusterError> {
    match source {
        Source::File(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ClusterError::File {
                path: name.clone(),
                reason: e.to_string(),
            })?;
            parse_file(&text, &name)
        }
        Source::Cluster { context } => {
            let context = context.clone();
            std::thread::scope(|scope| {
                scope
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| ClusterError::NoKubeconfig {
                                reason: format!("could not start a runtime: {e}"),
                            })?;
                        runtime.block_on(from_cluster(context.as_deref()))
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(ClusterError::NoKubeconfig {
                            reason: "the Kubernetes client stopped unexpectedly".into(),
                        })
                    })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_style_configmap_gives_both_sides() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-registry-hosting\n  namespace: kube-public\ndata:\n  localRegistryHosting.v1: |\n    host: \"localhost:5001\"\n    hostFromContainerRuntime: \"kind-registry:5000\"\n    help: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n";
        assert_eq!(
            parse_file(text, "cm.yaml").unwrap(),
            Hosting {
                external: "localhost:5001".into(),
                internal: "kind-registry:5000".into()
            }
        );
        let bare = parse_file("host: localhost:5000\n", "v1.yaml").unwrap();
        assert_eq!(bare.internal, "localhost:5000");
    }

    #[test]
    fn malformed_documents_name_the_source() {
        for (text, fragment) in [
            (
                "data:\n  localRegistryHosting.v1: \"help: x\"\n",
                "has no `host`",
            ),
            (
                "data:\n  localRegistryHosting.v1: \"host: [\"\n",
                "is not valid",
            ),
            ("data:\n  other: x\n", "no data.localRegistryHosting.v1"),
            (
                "data:\n  localRegistryHosting.v1: {host: x}\n",
                "must be a string",
            ),
            ("[", "not valid YAML"),
        ] {
            let e = parse_file(text, "cm.yaml").unwrap_err().to_string();
            assert!(e.starts_with("cm.yaml: "), "{e}");
            assert!(e.contains(fragment), "{text}: {e}");
        }
    }
}
