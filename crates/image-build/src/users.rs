//! `USER` and `--chown` values resolved against the image's `/etc/passwd` and `/etc/group`.

use std::io::Read;
use std::path::Path;

use fs_confine::Root;

use crate::{BuildError, Result};

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from /etc/group), for RUN.
    pub groups: Vec<u32>,
}

/// A file of the image (`etc/passwd`), read with every symlink resolved inside the root.
fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    let mut f = Root::open(rootfs).ok()?.open_file(Path::new(rel)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    Some(text)
}

fn lookup(text: Option<&str>, name: &str, field: usize) -> Option<Vec<String>> {
    let text = text?;
    text.lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.len() > field && f[0] == name)
}

/// Resolve `user[:group]` (names or numbers) inside the root filesystem `rootfs`.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<Ids> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
    let group_file = read_in_root(rootfs, "etc/group");
    let (uid, primary, name) = match user.parse::<u32>() {
        Ok(n) => {
            let entry = passwd.as_deref().and_then(|t| {
                t.lines()
                    .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
                    .find(|f| f.len() > 3 && f[2] == n.to_string())
            });
            (
                n,
                entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
                entry.map(|f| f[0].clone()),
            )
        }
        Err(_) => {
            let f = lookup(passwd.as_deref(), user, 3).ok_or_else(|| {
                BuildError::Invalid(format!(
                    "unable to find user {user}: no matching entries in passwd file"
                ))
            })?;
            let uid = f[2]
                .parse()
                .map_err(|_| BuildError::Invalid(format!("bad uid for {user} in /etc/passwd")))?;
            let gid = f[3]
                .parse()
                .map_err(|_| BuildError::Invalid(format!("bad gid for {user} in /etc/passwd")))?;
            (uid, gid, Some(user.to_string()))
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(group_file.as_deref(), g, 2)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    BuildError::Invalid(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        },
    };
    let mut groups = Vec::new();
    if let (Some(name), None) = (&name, group)
        && let Some(text) = &group_file
    {
        for l in text.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() > 3
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && g != gid
            {
                groups.push(g);
            }
        }
    }
    Ok(Ids { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_groups() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nstaff:x:50:app\n",
        )
        .unwrap();
        assert_eq!(
            resolve(d.path(), "app").unwrap(),
            Ids {
                uid: 1000,
                gid: 1001,
                groups: vec![50]
            }
        );
        assert_eq!(resolve(d.path(), "app:staff").unwrap().gid, 50);
        assert_eq!(resolve(d.path(), "1000").unwrap().gid, 1001);
        assert_eq!(
            resolve(d.path(), "4242:7").unwrap(),
            Ids {
                uid: 4242,
                gid: 7,
                groups: vec![]
            }
        );
        assert!(resolve(d.path(), "nobody").is_err());
        assert!(resolve(d.path(), "app:nogroup").is_err());
    }
}
