//! `[package.metadata.cluster]` and `[workspace.metadata.cluster]`: reading, merging, and errors
//! that point at the key in the Cargo.toml it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde_json::Value;

/// Which table of which Cargo.toml a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub manifest: PathBuf,
    pub section: Section,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Workspace,
    Package,
}

impl Origin {
    pub fn package(manifest: &Path) -> Origin {
        Origin {
            manifest: manifest.to_path_buf(),
            section: Section::Package,
        }
    }

    pub fn workspace(manifest: &Path) -> Origin {
        Origin {
            manifest: manifest.to_path_buf(),
            section: Section::Workspace,
        }
    }

    /// The TOML table path of the cluster table: `package.metadata.cluster`.
    fn table_path(&self) -> [&'static str; 3] {
        match self.section {
            Section::Workspace => ["workspace", "metadata", "cluster"],
            Section::Package => ["package", "metadata", "cluster"],
        }
    }

    /// Resolves a path given in this Cargo.toml relative to its directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let dir = self.manifest.parent().unwrap_or(Path::new("."));
        dir.join(path)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] in {}",
            self.table_path().join("."),
            self.manifest.display()
        )
    }
}

/// A configuration value together with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
    /// Key path below the cluster table, e.g. `["registry", "internal"]`.
    pub key: Vec<String>,
}

impl<T> Sourced<T> {
    /// An error about this value, pointing at its key.
    pub fn error(&self, message: impl Into<String>, help: Option<String>) -> ConfigError {
        let key: Vec<&str> = self.key.iter().map(String::as_str).collect();
        ConfigError::at(&self.origin, &key, message, help)
    }
}

/// The registry setting: one address, or the split form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySetting {
    Same(String),
    Split {
        external: String,
        internal: String,
    },
    /// KEP-1755: `"cluster"` (the kubeconfig's cluster) or the path of a ConfigMap file.
    LocalRegistryHosting(String),
}

/// A file or directory to copy into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeSetting {
    /// Path on the host, relative to the Cargo.toml that named it.
    pub from: String,
    /// Absolute path in the image.
    pub to: String,
}

/// Declares each key of the cluster table once: its name in Cargo.toml, its field in
/// [`ClusterConfig`] (whose type says how a package's value merges over the workspace's, see
/// [`Merge`]) and the [`Reader`] method that reads it. From the one list come the struct,
/// [`KNOWN_KEYS`] (in this order, which the "known keys" help prints), the reader's dispatch
/// and [`ClusterConfig::merged_over`].
macro_rules! cluster_keys {
    ($( $(#[$doc:meta])* $key:literal => $field:ident: $ty:ty = $read:ident; )*) => {
        /// The merged cluster settings for one package. Every field knows where it came from.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct ClusterConfig {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        /// Every key the cluster table accepts, for validation and did-you-mean hints.
        pub const KNOWN_KEYS: &[&str] = &[$($key),*];

        impl ClusterConfig {
            /// Reads `key` into its field; `false` when the table has no such key.
            fn read_key(
                &mut self,
                reader: &Reader,
                key: &str,
                value: &Value,
            ) -> Result<bool, ConfigError> {
                match key {
                    $( $key => self.$field = reader.$read(key, value)?.into(), )*
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// Package settings over workspace defaults: each key set in the package replaces
            /// the workspace's; the tables `env`, `labels` and `build-args` merge entry by entry.
            pub fn merged_over(self, workspace: ClusterConfig) -> ClusterConfig {
                ClusterConfig {
                    $( $field: self.$field.over(workspace.$field), )*
                }
            }
        }
    };
}

cluster_keys! {
    "registry" => registry: Option<Sourced<RegistrySetting>> = registry;
    "image" => image: Option<Sourced<String>> = string;
    "tags" => tags: Option<Sourced<Vec<String>>> = string_list;
    "bin" => bin: Option<Sourced<String>> = string;
    /// Several binaries, one image each; `bin` and `bins` exclude each other.
    "bins" => bins: Option<Sourced<Vec<String>>> = string_list;
    "base" => base: Option<Sourced<String>> = string;
    "builder" => builder: Option<Sourced<String>> = string;
    "env" => env: BTreeMap<String, Sourced<String>> = string_table;
    "labels" => labels: BTreeMap<String, Sourced<String>> = string_table;
    "user" => user: Option<Sourced<String>> = string;
    "include" => include: Option<Sourced<Vec<IncludeSetting>>> = includes;
    "insecure" => insecure: Option<Sourced<Vec<String>>> = string_list;
    "ca-cert" => ca_cert: Option<Sourced<String>> = string;
    "dockerfile" => dockerfile: Option<Sourced<String>> = string;
    "context" => context: Option<Sourced<String>> = string;
    "build-args" => build_args: BTreeMap<String, Sourced<String>> = string_table;
    "target" => target: Option<Sourced<String>> = string;
    "pull" => pull: Option<Sourced<bool>> = boolean;
    "platform" => platform: Option<Sourced<String>> = string;
    "check-base" => check_base: Option<Sourced<bool>> = boolean;
    "tzdata" => tzdata: Option<Sourced<bool>> = boolean;
    "media-types" => media_types: Option<Sourced<String>> = string;
    "sbom" => sbom: Option<Sourced<String>> = string;
    "provenance" => provenance: Option<Sourced<bool>> = boolean;
    "platforms" => platforms: Option<Sourced<Vec<String>>> = string_list;
    /// `buildkit = true | false | "auto"`: `None` inside means auto.
    "buildkit" => buildkit: Option<Sourced<Option<bool>>> = buildkit;
    /// `compression = "gzip" | "zstd"`.
    "compression" => compression: Option<Sourced<String>> = string;
}

/// How a package's setting combines with the workspace's.
trait Merge {
    fn over(self, workspace: Self) -> Self;
}

/// A value: the package's, if set, replaces the workspace's.
impl<T> Merge for Option<Sourced<T>> {
    fn over(self, workspace: Self) -> Self {
        self.or(workspace)
    }
}

/// A table: merged entry by entry, the package's entries over the workspace's.
impl Merge for BTreeMap<String, Sourced<String>> {
    fn over(self, mut workspace: Self) -> Self {
        workspace.extend(self);
        workspace
    }
}

impl ClusterConfig {
    /// Reads one cluster table (the JSON cargo metadata gives for it).
    pub fn from_table(value: &Value, origin: &Origin) -> Result<ClusterConfig, ConfigError> {
        let table = match value {
            Value::Null => return Ok(ClusterConfig::default()),
            Value::Object(map) => map,
            other => {
                return Err(ConfigError::at(
                    origin,
                    &[],
                    format!("`cluster` must be a table, found {}", json_type_name(other)),
                    Some("write it as a table header: [package.metadata.cluster]".into()),
                ));
            }
        };
        let mut config = ClusterConfig::default();
        let reader = Reader { origin };
        for (key, value) in table {
            if !config.read_key(&reader, key, value)? {
                return Err(reader.unknown_key(&[], key, KNOWN_KEYS));
            }
        }
        if let (Some(_), Some(bins)) = (&config.bin, &config.bins) {
            return Err(bins.error(
                "`bin` and `bins` are both set; they name the same thing",
                Some("keep one: `bins = [\"a\", \"b\"]` for an image per binary, or `bin = \"a\"` for one".into()),
            ));
        }
        Ok(config)
    }
}

/// Reads typed values out of one cluster table, turning type mismatches into located errors.
struct Reader<'a> {
    origin: &'a Origin,
}

impl Reader<'_> {
    fn sourced<T>(&self, key: &[&str], value: T) -> Sourced<T> {
        Sourced {
            value,
            origin: self.origin.clone(),
            key: key.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn type_error(&self, key: &[&str], expected: &str, found: &Value) -> ConfigError {
        ConfigError::at(
            self.origin,
            key,
            format!(
                "`{}` must be {expected}, found {}",
                key.join("."),
                json_type_name(found)
            ),
            None,
        )
    }

    fn unknown_key(&self, parent: &[&str], unknown: &str, known: &[&str]) -> ConfigError {
        let mut path: Vec<&str> = parent.to_vec();
        path.push(unknown);
        let suggestion = known
            .iter()
            .map(|k| (strsim::jaro_winkler(unknown, k), *k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k);
        let help = match suggestion {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("known keys: {}", known.join(", ")),
        };
        ConfigError::at(
            self.origin,
            &path,
            format!("unknown key `{}`", path.join(".")),
            Some(help),
        )
    }

    fn string(&self, key: &str, value: &Value) -> Result<Sourced<String>, ConfigError> {
        match value {
            Value::String(s) => Ok(self.sourced(&[key], s.clone())),
            other => Err(self.type_error(&[key], "a string", other)),
        }
    }

    fn buildkit(&self, key: &str, value: &Value) -> Result<Sourced<Option<bool>>, ConfigError> {
        match value {
            Value::Bool(b) => Ok(self.sourced(&[key], Some(*b))),
            Value::String(s) if s == "auto" => Ok(self.sourced(&[key], None)),
            other => Err(self.type_error(&[key], "true, false or \"auto\"", other)),
        }
    }

    fn boolean(&self, key: &str, value: &Value) -> Result<Sourced<bool>, ConfigError> {
        match value {
            Value::Bool(b) => Ok(self.sourced(&[key], *b)),
            other => Err(self.type_error(&[key], "true or false", other)),
        }
    }

    fn string_list(&self, key: &str, value: &Value) -> Result<Sourced<Vec<String>>, ConfigError> {
        let Value::Array(items) = value else {
            return Err(self.type_error(&[key], "an array of strings", value));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => return Err(self.type_error(&[key], "an array of strings", other)),
            }
        }
        Ok(self.sourced(&[key], out))
    }

    fn string_table(
        &self,
        key: &str,
        value: &Value,
    ) -> Result<BTreeMap<String, Sourced<String>>, ConfigError> {
        let Value::Object(map) = value else {
            return Err(self.type_error(&[key], "a table of strings", value));
        };
        let mut out = BTreeMap::new();
        for (name, v) in map {
            let Value::String(s) = v else {
                return Err(ConfigError::at(
                    self.origin,
                    &[key, name],
                    format!(
                        "`{key}.{name}` must be a string, found {}",
                        json_type_name(v)
                    ),
                    Some(format!("quote the value: {name} = \"{}\"", plain(v))),
                ));
            };
            out.insert(name.clone(), self.sourced(&[key, name], s.clone()));
        }
        Ok(out)
    }

    /// `registry` (its messages name the key and the keys below it).
    fn registry(&self, _key: &str, value: &Value) -> Result<Sourced<RegistrySetting>, ConfigError> {
        match value {
            Value::String(s) => Ok(self.sourced(&["registry"], RegistrySetting::Same(s.clone()))),
            Value::Object(map) if map.contains_key("local-registry-hosting") => {
                if let Some(other) = map.keys().find(|k| *k != "local-registry-hosting") {
                    return Err(ConfigError::at(
                        self.origin,
                        &["registry", other.as_str()],
                        format!(
                            "`registry.{other}` cannot be combined with `local-registry-hosting`, which gives both addresses"
                        ),
                        None,
                    ));
                }
                match &map["local-registry-hosting"] {
                    Value::String(s) if !s.trim().is_empty() => Ok(self.sourced(
                        &["registry", "local-registry-hosting"],
                        RegistrySetting::LocalRegistryHosting(s.clone()),
                    )),
                    other => Err(self.type_error(
                        &["registry", "local-registry-hosting"],
                        "\"cluster\" or the path of a ConfigMap file",
                        other,
                    )),
                }
            }
            Value::Object(map) => {
                for key in map.keys() {
                    if key != "external" && key != "internal" {
                        return Err(self.unknown_key(
                            &["registry"],
                            key,
                            &["external", "internal", "local-registry-hosting"],
                        ));
                    }
                }
                let side = |name: &str| -> Result<String, ConfigError> {
                    match map.get(name) {
                        Some(Value::String(s)) => Ok(s.clone()),
                        Some(other) => Err(self.type_error(&["registry", name], "a string", other)),
                        None => Err(ConfigError::at(
                            self.origin,
                            &["registry"],
                            format!("`registry` has no `{name}` address; a split registry needs both `external` and `internal`"),
                            Some(
                                "write registry = { external = \"localhost:5001\", internal = \"registry:5000\" }, or a plain string when both are the same".into(),
                            ),
                        )),
                    }
                };
                let external = side("external")?;
                let internal = side("internal")?;
                Ok(self.sourced(&["registry"], RegistrySetting::Split { external, internal }))
            }
            other => Err(self.type_error(
                &["registry"],
                "a string or a table { external = \"...\", internal = \"...\" }",
                other,
            )),
        }
    }

    /// `include` (its messages name the key).
    fn includes(
        &self,
        _key: &str,
        value: &Value,
    ) -> Result<Sourced<Vec<IncludeSetting>>, ConfigError> {
        let Value::Array(items) = value else {
            return Err(self.type_error(&["include"], "an array", value));
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                // A bare path lands at the same path under the image root.
                Value::String(s) if s.starts_with('/') || s.split('/').any(|c| c == "..") => {
                    return Err(ConfigError::at(
                        self.origin,
                        &["include"],
                        format!(
                            "`{s}` is outside the package, so it has no path of its own in the image"
                        ),
                        Some(format!(
                            "say where it goes: {{ from = \"{s}\", to = \"/srv/...\" }}"
                        )),
                    ));
                }
                Value::String(s) => out.push(IncludeSetting {
                    from: s.clone(),
                    to: format!("/{}", s.trim_start_matches("./").trim_start_matches('/')),
                }),
                Value::Object(map) => {
                    for key in map.keys() {
                        if key != "from" && key != "to" {
                            return Err(self.unknown_key(&["include"], key, &["from", "to"]));
                        }
                    }
                    let (Some(Value::String(from)), Some(Value::String(to))) =
                        (map.get("from"), map.get("to"))
                    else {
                        return Err(ConfigError::at(
                            self.origin,
                            &["include"],
                            "each `include` entry needs string `from` (host path) and `to` (path in the image)",
                            Some("include = [{ from = \"config/app.toml\", to = \"/etc/app/app.toml\" }]".into()),
                        ));
                    };
                    out.push(IncludeSetting {
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
                other => {
                    return Err(self.type_error(
                        &["include"],
                        "a path or { from, to } table",
                        other,
                    ));
                }
            }
        }
        Ok(self.sourced(&["include"], out))
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A configuration error that names the key and the Cargo.toml it came from, with the line and
/// a snippet of the file when the key can be found in it.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error(transparent)]
#[diagnostic(transparent)]
pub struct ConfigError(Box<ConfigErrorDetail>);

/// Boxed so results stay small: the source snippet makes this large.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct ConfigErrorDetail {
    message: String,
    #[help]
    help: Option<String>,
    #[source_code]
    source_code: Option<NamedSource<String>>,
    #[label("here")]
    span: Option<SourceSpan>,
}

impl ConfigError {
    /// An error about `key` (a path below the cluster table) in the table `origin` names.
    pub fn at(
        origin: &Origin,
        key: &[&str],
        message: impl Into<String>,
        help: Option<String>,
    ) -> ConfigError {
        let message = message.into();
        // The snippet shown must not carry a password written into a registry address.
        let text = std::fs::read_to_string(&origin.manifest)
            .ok()
            .map(|t| crate::reference::redact_userinfo(&t));
        let span = text.as_deref().and_then(|t| {
            let mut path: Vec<&str> = origin.table_path().to_vec();
            path.extend_from_slice(key);
            locate(t, &path)
        });
        let mut where_ = format!("{}", origin.manifest.display());
        if let (Some(t), Some(range)) = (&text, &span) {
            let line = t[..range.start].matches('\n').count() + 1;
            where_ = format!("{where_}:{line}");
        }
        let table = format!("[{}]", origin.table_path().join("."));
        let key_path = key.join(".");
        // Name the key unless the message already does.
        let message = if key.is_empty() || message.contains(&format!("`{key_path}`")) {
            format!("{table}: {message}")
        } else {
            format!("{table} `{key_path}`: {message}")
        };
        ConfigError(Box::new(ConfigErrorDetail {
            message: format!("{where_}: {message}"),
            help,
            source_code: text.map(|t| {
                NamedSource::new(origin.manifest.display().to_string(), t).with_language("TOML")
            }),
            span: span.map(|r| SourceSpan::from(r.start..r.end)),
        }))
    }

    /// An error with no location, for settings given on the command line.
    pub fn plain(message: impl Into<String>, help: Option<String>) -> ConfigError {
        ConfigError(Box::new(ConfigErrorDetail {
            message: message.into(),
            help,
            source_code: None,
            span: None,
        }))
    }

    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

/// Finds the byte range of the key (or, failing that, its nearest parent) at `path` in a TOML
/// document. Returns `None` when the text does not parse.
fn locate(text: &str, path: &[&str]) -> Option<std::ops::Range<usize>> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut found = None;
    let mut table = root.get_ref();
    for segment in path {
        let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *segment)
        else {
            break;
        };
        found = Some(key.span());
        // Only tables can be followed further; stop at anything else (an array, a value).
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    // Spans for keys of dotted or header tables can be empty; treat those as unknown.
    found.filter(|r| r.end > r.start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn origin_with(text: &str) -> (tempfile::TempDir, Origin) {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(&manifest, text).unwrap();
        (dir, Origin::package(&manifest))
    }

    #[test]
    fn reads_every_key() {
        let (_d, origin) = origin_with("[package]\nname = \"x\"\n");
        let table = json!({
            "registry": {"external": "localhost:5001", "internal": "registry:5000"},
            "image": "team/greeter", "tags": ["{version}", "latest"], "bin": "greeter",
            "base": "scratch", "builder": "oci", "env": {"A": "1"}, "labels": {"l": "v"},
            "user": "65532", "include": ["assets", {"from": "a.toml", "to": "/etc/a.toml"}],
            "insecure": ["registry.lan:5000"], "ca-cert": "ca.pem", "dockerfile": "Dockerfile",
            "context": ".", "build-args": {"X": "y"}, "target": "runtime", "pull": true,
            "platform": "linux/amd64"
        });
        let c = ClusterConfig::from_table(&table, &origin).unwrap();
        assert_eq!(
            c.registry.unwrap().value,
            RegistrySetting::Split {
                external: "localhost:5001".into(),
                internal: "registry:5000".into()
            }
        );
        assert_eq!(c.include.unwrap().value[0].to, "/assets");
        assert_eq!(c.env["A"].key, vec!["env", "A"]);
        assert!(c.pull.unwrap().value);
    }

    #[test]
    fn unknown_key_suggests_and_locates() {
        let text = "[package]\nname = \"x\"\n\n[package.metadata.cluster]\nregistry = \"localhost:5000\"\nimgae = \"x\"\n";
        let (_d, origin) = origin_with(text);
        let e = ClusterConfig::from_table(&json!({"imgae": "x"}), &origin).unwrap_err();
        assert!(e.message().contains("Cargo.toml:6"), "{}", e.message());
        assert!(e.message().contains("unknown key `imgae`"));
        assert_eq!(e.0.help.as_deref(), Some("did you mean `image`?"));
    }

    #[test]
    fn split_registry_needs_both_sides() {
        let text = "[package]\nname = \"x\"\n[package.metadata.cluster]\nregistry = { external = \"a:1\" }\n";
        let (_d, origin) = origin_with(text);
        let e = ClusterConfig::from_table(&json!({"registry": {"external": "a:1"}}), &origin)
            .unwrap_err();
        assert!(e.message().contains("no `internal`"), "{}", e.message());
        assert!(e.message().contains(":4:"), "{}", e.message());
        let e = ClusterConfig::from_table(
            &json!({"registry": {"external": "a:1", "internal": "b:1", "extrnal": "c"}}),
            &origin,
        )
        .unwrap_err();
        assert!(e.message().contains("registry.extrnal"), "{}", e.message());
    }

    #[test]
    fn buildkit_is_true_false_or_auto() {
        let (_d, origin) = origin_with("[package]\nname = \"x\"\n");
        for (value, expected) in [
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!("auto"), None),
        ] {
            let c = ClusterConfig::from_table(&json!({ "buildkit": value }), &origin).unwrap();
            assert_eq!(c.buildkit.unwrap().value, expected, "{value}");
        }
        assert!(
            ClusterConfig::from_table(&json!({}), &origin)
                .unwrap()
                .buildkit
                .is_none()
        );
    }

    #[test]
    fn type_errors_name_the_key() {
        let (_d, origin) = origin_with("[package]\nname = \"x\"\n");
        for (table, key) in [
            (json!({"tags": "latest"}), "tags"),
            (json!({"tags": [1]}), "tags"),
            (json!({"image": 3}), "image"),
            (json!({"env": {"PORT": 8080}}), "env.PORT"),
            (json!({"pull": "yes"}), "pull"),
            (json!({"buildkit": "yes"}), "buildkit"),
            (json!({"registry": 5}), "registry"),
            (json!({"include": [{"from": "a"}]}), "include"),
        ] {
            let e = ClusterConfig::from_table(&table, &origin).unwrap_err();
            assert!(e.message().contains(key), "{table}: {}", e.message());
        }
        let e = ClusterConfig::from_table(&json!("x"), &origin).unwrap_err();
        assert!(e.message().contains("must be a table"));
    }

    #[test]
    fn package_overrides_workspace_key_by_key() {
        let (_d, origin) = origin_with("[package]\nname = \"x\"\n");
        let ws = ClusterConfig::from_table(
            &json!({"registry": "ws:5000", "tags": ["ws"], "env": {"A": "ws", "B": "ws"}}),
            &Origin::workspace(&origin.manifest),
        )
        .unwrap();
        let pkg =
            ClusterConfig::from_table(&json!({"tags": ["pkg"], "env": {"B": "pkg"}}), &origin)
                .unwrap();
        let merged = pkg.merged_over(ws);
        assert_eq!(
            merged.registry.unwrap().value,
            RegistrySetting::Same("ws:5000".into())
        );
        assert_eq!(merged.tags.unwrap().value, vec!["pkg"]);
        assert_eq!(merged.env["A"].value, "ws");
        assert_eq!(merged.env["B"].value, "pkg");
    }

    #[test]
    fn locate_handles_inline_and_dotted_tables() {
        let text = "[package]\nname = \"x\"\nmetadata.cluster.image = \"A\"\n";
        let r = locate(text, &["package", "metadata", "cluster", "image"]).unwrap();
        assert_eq!(&text[r], "image");
        let text = "[package.metadata.cluster]\nregistry = { external = 1, internal = \"b\" }\n";
        let r = locate(
            text,
            &["package", "metadata", "cluster", "registry", "external"],
        )
        .unwrap();
        assert_eq!(&text[r], "external");
        assert!(locate("not = [toml", &["a"]).is_none());
    }
}
