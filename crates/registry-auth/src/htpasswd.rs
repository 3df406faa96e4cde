//! htpasswd files with bcrypt hashes (`$2y$`, `$2b$`, `$2a$`), as Distribution reads them.

use std::collections::HashMap;
use std::path::Path;

use crate::error::AuthError;

/// Users and their bcrypt hashes.
#[derive(Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash unknown users are checked against, so that a wrong user name costs as much
    /// time as a wrong password (same cost as the file's costliest entry).
    dummy: String,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes stay out of debug output.
        f.debug_struct("Htpasswd")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Htpasswd {
    /// Read a file; any entry that is not bcrypt is an error naming its line and user.
    pub fn load(path: &Path) -> Result<Htpasswd, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Io {
            what: format!("reading htpasswd file {}", path.display()),
            source: e,
        })?;
        Htpasswd::parse(&text).map_err(|msg| AuthError::Htpasswd {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parse the text of an htpasswd file (blank lines and `#` comments allowed).
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        let mut cost = 4;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", i + 1))?;
            if user.is_empty() {
                return Err(format!("line {}: empty user name", i + 1));
            }
            let kind = hash.get(..4).unwrap_or("");
            if !matches!(kind, "$2y$" | "$2b$" | "$2a$") {
                return Err(format!(
                    "line {} (user {user:?}): only bcrypt hashes ($2y$, $2b$, $2a$) are supported; create entries with `htpasswd -B`",
                    i + 1
                ));
            }
            let parts: bcrypt::HashParts = hash
                .parse()
                .map_err(|_| format!("line {} (user {user:?}): malformed bcrypt hash", i + 1))?;
            cost = cost.max(parts.get_cost());
            if users.insert(user.to_string(), hash.to_string()).is_some() {
                return Err(format!("line {}: user {user:?} appears twice", i + 1));
            }
        }
        let dummy = bcrypt::hash(uuid::Uuid::new_v4().to_string(), cost)
            .map_err(|e| format!("bcrypt: {e}"))?;
        Ok(Htpasswd { users, dummy })
    }

    /// Whether a user exists.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Check a password (slow: bcrypt). Unknown users cost the same as known ones.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bcrypt_variants_and_rejects_others() {
        let h2y = bcrypt::hash_with_result("pw", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let h2b = bcrypt::hash("pw2", 4).unwrap();
        let h2a = bcrypt::hash_with_result("pw3", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoA);
        let file = format!("# users\nalice:{h2y}\n\nbob:{h2b}\ncarol:{h2a}\n");
        let h = Htpasswd::parse(&file).unwrap();
        assert_eq!(h.len(), 3);
        assert!(h.verify("alice", "pw"));
        assert!(!h.verify("alice", "pw2"));
        assert!(h.verify("bob", "pw2"));
        assert!(h.verify("carol", "pw3"));
        assert!(!h.verify("nobody", "pw"));

        let md5 = Htpasswd::parse("eve:$apr1$abc$def\n").unwrap_err();
        assert!(md5.contains("only bcrypt") && md5.contains("eve"), "{md5}");
        let sha = Htpasswd::parse("eve:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap_err();
        assert!(sha.contains("only bcrypt"), "{sha}");
        assert!(Htpasswd::parse("justaname\n").is_err());
        assert!(Htpasswd::parse(&format!("a:{h2b}\na:{h2b}\n")).is_err());
        assert!(Htpasswd::parse("a:$2y$05$short\n").is_err());
    }
}
