//! `/etc/passwd` and `/etc/group` for the container identity: the image's
//! own files with the container user's entries put in, generated once per
//! launch and bound over the image's files (never written into the image).

use std::path::PathBuf;

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl UserEntry {
    fn line(&self) -> String {
        format!(
            "{}:x:{}:{}:{}:{}:{}",
            self.name,
            self.uid,
            self.gid,
            self.gecos.replace([':', '\n'], " "),
            self.home.display(),
            self.shell.display()
        )
    }
}

/// Fields of a passwd/group line: name and numeric id (field 3).
fn name_and_id(line: &str) -> Option<(&str, u32)> {
    let mut fields = line.split(':');
    let name = fields.next()?;
    let id = fields.nth(1)?.parse().ok()?;
    Some((name, id))
}

/// The shell of `name` in the image's passwd text, if listed.
pub fn shell_of(passwd: &str, name: &str) -> Option<PathBuf> {
    passwd
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .and_then(|l| l.split(':').nth(6))
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// The image's lines minus any with the same name or id, then `line`.
fn replace_entry(image: Option<&str>, name: &str, id: u32, line: &str) -> String {
    let mut out = String::new();
    for l in image.unwrap_or("").lines() {
        let clash = match name_and_id(l) {
            Some((n, i)) => n == name || i == id,
            None => false,
        };
        if !clash && !l.trim().is_empty() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str(line);
    out.push('\n');
    out
}

/// Generate `(passwd, group)` from the image's files (if any).
pub fn generate(
    image_passwd: Option<&str>,
    image_group: Option<&str>,
    user: &UserEntry,
    group_name: &str,
) -> (String, String) {
    let passwd = replace_entry(image_passwd, &user.name, user.uid, &user.line());
    let group_line = format!("{group_name}:x:{}:", user.gid);
    let group = replace_entry(image_group, group_name, user.gid, &group_line);
    (passwd, group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE_PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                                daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                                alice:x:1000:1000::/home/alice:/bin/sh\n";
    const IMAGE_GROUP: &str = "root:x:0:\nusers:x:100:\nalice:x:1000:\n";

    #[test]
    fn fakeroot_root_gets_the_bound_home() {
        let root = UserEntry {
            name: "root".into(),
            uid: 0,
            gid: 0,
            gecos: "root".into(),
            home: "/home/bob".into(),
            shell: "/bin/bash".into(),
        };
        let (p, g) = generate(Some(IMAGE_PASSWD), Some(IMAGE_GROUP), &root, "root");
        assert_eq!(
            p,
            "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
             alice:x:1000:1000::/home/alice:/bin/sh\n\
             root:x:0:0:root:/home/bob:/bin/bash\n"
        );
        assert_eq!(g, "users:x:100:\nalice:x:1000:\nroot:x:0:\n");
    }

    #[test]
    fn keep_id_user_replaces_clashing_entries() {
        let bob = UserEntry {
            name: "bob".into(),
            uid: 1000,
            gid: 1000,
            gecos: "Bob: the builder".into(),
            home: "/home/bob".into(),
            shell: "/bin/sh".into(),
        };
        let (p, g) = generate(Some(IMAGE_PASSWD), Some(IMAGE_GROUP), &bob, "bob");
        assert!(!p.contains("alice"), "uid 1000 clash removed: {p}");
        assert!(p.starts_with("root:x:0:0:root:/root:/bin/bash\n"));
        assert!(p.ends_with("bob:x:1000:1000:Bob  the builder:/home/bob:/bin/sh\n"));
        assert!(g.ends_with("bob:x:1000:\n"));
        assert!(!g.contains("alice"));
    }

    #[test]
    fn image_without_files() {
        let u = UserEntry {
            name: "root".into(),
            uid: 0,
            gid: 0,
            gecos: "root".into(),
            home: "/root".into(),
            shell: "/bin/sh".into(),
        };
        let (p, g) = generate(None, None, &u, "root");
        assert_eq!(p, "root:x:0:0:root:/root:/bin/sh\n");
        assert_eq!(g, "root:x:0:\n");
    }

    #[test]
    fn shell_lookup() {
        assert_eq!(shell_of(IMAGE_PASSWD, "root"), Some("/bin/bash".into()));
        assert_eq!(shell_of(IMAGE_PASSWD, "nobody"), None);
    }
}
