//! `rfake registry login|logout`: the credentials `docker://` and `oras://`
//! pulls send, in the files Docker and podman use too.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use crate::cli::RegistryCommand;
use crate::registry::auth::{self, Credentials};
use crate::registry::client::LoginCheck;
use crate::registry::reference::normalize_registry;
use crate::registry::{Client, ClientOptions, RegistryError};

/// The longest password read from standard input.
const PASSWORD_MAX: u64 = 64 << 10;

/// Run the subcommand. `login` trusts `--ca-file`, else the
/// configuration's `registry_ca_file` (the configuration is read only then).
pub fn run(
    command: RegistryCommand,
    env: &[(OsString, OsString)],
    load: impl FnOnce() -> super::Loaded,
) -> Result<u8, crate::error::Error> {
    match command {
        RegistryCommand::Login {
            username,
            password_stdin,
            ca_file,
            registry,
        } => {
            let ca_file = match ca_file {
                Some(file) => Some(file),
                None => load()?.registry_ca_file.value,
            };
            login(&registry, username, password_stdin, ca_file, env)?
        }
        RegistryCommand::Logout { registry } => logout(&registry, env)?,
    }
    Ok(0)
}

fn usage(detail: &str) -> RegistryError {
    RegistryError::BadReference {
        input: "rfake registry".to_string(),
        detail: detail.to_string(),
    }
}

fn login(
    registry: &str,
    username: Option<String>,
    password_stdin: bool,
    ca_file: Option<PathBuf>,
    env: &[(OsString, OsString)],
) -> Result<(), RegistryError> {
    let registry = normalize_registry(registry)?;
    let file = auth::login_file(env)
        .ok_or_else(|| usage("neither REGISTRY_AUTH_FILE nor HOME is set: nowhere to save"))?;
    // The CA file is checked before anything is asked.
    let mut client = Client::new(ClientOptions {
        ca_file,
        auth_files: Vec::new(),
        user_agent: format!("rfake/{}", env!("CARGO_PKG_VERSION")),
    })?;
    let username = match username {
        Some(u) => u,
        None if password_stdin => {
            return Err(usage(
                "--password-stdin needs the user name: give it with -u USER",
            ));
        }
        None => prompt("Username: ", true)?,
    };
    if username.is_empty() || username.contains(':') {
        return Err(usage("the user name is empty or has a ':'"));
    }
    let password = if password_stdin {
        let mut raw = Vec::new();
        std::io::stdin()
            .lock()
            .take(PASSWORD_MAX + 1)
            .read_to_end(&mut raw)
            .map_err(|e| usage(&format!("reading the password from standard input: {e}")))?;
        if raw.len() as u64 > PASSWORD_MAX {
            return Err(usage(
                "the password on standard input is longer than 64 KiB",
            ));
        }
        password_from_stdin(raw)?
    } else {
        prompt("Password: ", false)?
    };
    if password.is_empty() {
        return Err(usage("empty password"));
    }
    let credentials = Credentials { username, password };
    let check = client.check_login(&registry, &credentials)?;
    auth::save(&file, &registry, &credentials)?;
    if check == LoginCheck::NotNeeded {
        log::warn!("{registry} asks for no login; the credentials are saved anyway");
    }
    println!(
        "Login succeeded: credentials for {registry} saved in {}",
        crate::text::shown(&file)
    );
    Ok(())
}

fn logout(registry: &str, env: &[(OsString, OsString)]) -> Result<(), RegistryError> {
    let registry = normalize_registry(registry)?;
    let file = auth::login_file(env)
        .ok_or_else(|| usage("neither REGISTRY_AUTH_FILE nor HOME is set: no credential file"))?;
    if auth::remove(&file, &registry)? {
        println!(
            "Removed the credentials for {registry} from {}",
            crate::text::shown(&file)
        );
    } else {
        log::warn!(
            "not logged in to {registry}: {} has no entry for it",
            crate::text::shown(&file)
        );
    }
    Ok(())
}

/// A password piped in: UTF-8, one trailing newline dropped.
fn password_from_stdin(mut raw: Vec<u8>) -> Result<String, RegistryError> {
    if raw.last() == Some(&b'\n') {
        raw.pop();
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
    }
    String::from_utf8(raw).map_err(|_| usage("the password on standard input is not UTF-8"))
}

/// Ask on the terminal (`/dev/tty`); without echo unless `echo`.
fn prompt(question: &str, echo: bool) -> Result<String, RegistryError> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let no_terminal = |e: std::io::Error| {
        usage(&format!(
            "no terminal to ask on ({e}): give -u USER and --password-stdin"
        ))
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_terminal)?;
    (&tty).write_all(question.as_bytes()).map_err(no_terminal)?;
    // Echo off (newline still echoed), restored however this returns.
    struct Restore<'a>(&'a std::fs::File, Option<nix::sys::termios::Termios>);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            if let Some(saved) = self.1.take() {
                let _ = tcsetattr(self.0, SetArg::TCSAFLUSH, &saved);
            }
        }
    }
    let mut restore = Restore(&tty, None);
    if !echo {
        let saved = tcgetattr(&tty).map_err(|e| no_terminal(e.into()))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet).map_err(|e| no_terminal(e.into()))?;
        restore.1 = Some(saved);
    }
    let mut line = String::new();
    std::io::BufReader::new(&tty)
        .take(PASSWORD_MAX)
        .read_line(&mut line)
        .map_err(no_terminal)?;
    drop(restore);
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitKind;

    #[test]
    fn stdin_passwords() {
        assert_eq!(password_from_stdin(b"pw\n".to_vec()).unwrap(), "pw");
        assert_eq!(password_from_stdin(b"pw\r\n".to_vec()).unwrap(), "pw");
        assert_eq!(password_from_stdin(b"pw".to_vec()).unwrap(), "pw");
        // Only one newline is the terminator; the rest is the password.
        assert_eq!(password_from_stdin(b" pw \n\n".to_vec()).unwrap(), " pw \n");
        let e = password_from_stdin(b"\xff\n".to_vec()).unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::Usage);
    }

    #[test]
    fn password_stdin_needs_a_user() {
        let env = vec![("HOME".into(), "/nonexistent".into())];
        let e = login("127.0.0.1:1", None, true, None, &env).unwrap_err();
        assert!(e.to_string().contains("-u USER"), "{e}");
        assert_eq!(e.exit_kind(), ExitKind::Usage);
        let e = login("bad host", Some("u".into()), true, None, &env).unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::Usage);
    }
}
