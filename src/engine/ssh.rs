//! `ssh://[user@]host[:port]` engines, as the docker CLI reaches them: for every connection, the
//! system's `ssh` runs `docker system dial-stdio` on the remote host, and its stdin/stdout carry
//! the Engine API. The connections are bridged to a private unix socket that the Docker client
//! connects to, so any port works and the user's ssh setup (keys, agent, ~/.ssh/config,
//! known_hosts) applies unchanged. `BatchMode=yes`: ssh never prompts, it fails instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::net::UnixListener;
use tokio::process::Command;

use crate::shell::Shell;

/// The bridge; it stops when dropped.
pub struct SshTunnel {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SshTunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The parts of an `ssh://` address.
#[derive(Debug, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

pub fn parse(address: &str) -> Result<SshTarget, String> {
    let rest = address
        .strip_prefix("ssh://")
        .ok_or_else(|| "not an ssh:// address".to_string())?;
    let authority = rest.split('/').next().unwrap_or("");
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some(_) => return Err("an empty user name before `@`".into()),
        None => (None, authority),
    };
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "an IPv6 address without its closing `]`".to_string())?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("no host after ssh://".into());
    }
    // Anything ssh would read as an option is refused: the host goes on ssh's command line.
    if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) {
        return Err("a host or user starting with `-`".into());
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{p}` is not a port"))?,
        ),
    };
    Ok(SshTarget {
        user,
        host: host.to_string(),
        port,
    })
}

impl SshTunnel {
    /// Starts listening; ssh runs only when the Docker client connects. What goes wrong with
    /// a connection is told to `shell`.
    pub fn start(address: &str, shell: &Shell) -> Result<SshTunnel, String> {
        let target = parse(address)?;
        let dir = tempfile::Builder::new()
            .prefix("adapt-push-ssh-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for the ssh bridge: {e}"))?;
        let socket = dir.path().join("engine.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .and_then(UnixListener::from_std)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        let shell = shell.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let command = ssh_command(&target);
                let shell = shell.clone();
                tokio::spawn(async move {
                    if let Err(e) = bridge(stream, command, &shell).await {
                        shell.detail(&format!("ssh bridge: {e}"));
                    }
                });
            }
        });
        Ok(SshTunnel {
            _dir: dir,
            socket,
            task,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

fn ssh_command(target: &SshTarget) -> Command {
    let mut command = Command::new("ssh");
    command.args(["-o", "BatchMode=yes"]);
    if let Some(user) = &target.user {
        command.arg("-l").arg(user);
    }
    if let Some(port) = target.port {
        command.arg("-p").arg(port.to_string());
    }
    command
        .arg("--")
        .arg(&target.host)
        .args(["docker", "system", "dial-stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn bridge(
    stream: tokio::net::UnixStream,
    mut command: Command,
    shell: &Shell,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut child = command
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run ssh: {e}")))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("ssh started without its pipes"));
    };
    let (mut from_client, mut to_client) = stream.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut stdin).await;
    });
    let _ = tokio::io::copy(&mut stdout, &mut to_client).await;
    // ssh ended (or the engine closed): say why before the client sees the connection end.
    up.abort();
    let mut text = Vec::new();
    let _ = (&mut stderr).take(4096).read_to_end(&mut text).await;
    let status = child.wait().await?;
    if !status.success() {
        let text = String::from_utf8_lossy(&text);
        shell.warn(&format!(
            "ssh to the engine exited with {status}: {}",
            text.trim()
        ));
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_client).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let t = |user: Option<&str>, host: &str, port: Option<u16>| SshTarget {
            user: user.map(String::from),
            host: host.into(),
            port,
        };
        assert_eq!(
            parse("ssh://me@host:2222").unwrap(),
            t(Some("me"), "host", Some(2222))
        );
        assert_eq!(parse("ssh://host").unwrap(), t(None, "host", None));
        assert_eq!(
            parse("ssh://me@[::1]:22/").unwrap(),
            t(Some("me"), "::1", Some(22))
        );
        for bad in [
            "ssh://",
            "ssh://me@",
            "ssh://-oProxyCommand=x",
            "ssh://h:99999",
            "ssh://@h",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
