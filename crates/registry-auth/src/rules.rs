//! Access rules: repository patterns, users, groups, actions, anonymous pull and admins.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::AuthConfig;
use crate::error::AuthError;

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs, put manifests and tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// The scope spelling (`pull`, `push`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Parse one scope action; `*` is handled by callers.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository name pattern: `*` is one segment (or part of one), `**` any number of
/// segments (zero included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<String>,
}

impl Pattern {
    /// Parse a pattern such as `team/*`, `**`, `library/app-*`, `org/**/cache`.
    pub fn parse(text: &str) -> Result<Pattern, AuthError> {
        let bad = |why: &str| AuthError::Config(format!("repository pattern {text:?}: {why}"));
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let segments: Vec<String> = text.split('/').map(str::to_string).collect();
        for s in &segments {
            if s.is_empty() {
                return Err(bad("empty path segment"));
            }
            if s.contains("**") && s != "**" {
                return Err(bad("`**` must be a whole path segment"));
            }
            if !s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-*".contains(c))
            {
                return Err(bad(
                    "only lowercase letters, digits, `.`, `_`, `-`, `*` and `/` are allowed",
                ));
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a repository name matches.
    pub fn matches(&self, name: &str) -> bool {
        if name.is_empty() {
            return false;
        }
        let parts: Vec<&str> = name.split('/').collect();
        match_segments(&self.segments, &parts)
    }
}

fn match_segments(pat: &[String], parts: &[&str]) -> bool {
    match pat.split_first() {
        None => parts.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..]))
        }
        Some((p, rest)) => match parts.split_first() {
            Some((first, more)) => {
                match_segment(p.as_bytes(), first.as_bytes()) && match_segments(rest, more)
            }
            None => false,
        },
    }
}

/// `*` within a segment matches any run of characters of that segment.
fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_segment(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The user name; `None` for anonymous requests.
    pub user: Option<String>,
    /// The user's groups (from `auth.groups`).
    pub groups: Vec<String>,
    /// Whether the user is an admin (allowed everything, and the management API).
    pub admin: bool,
    /// When the request carried a bearer token: what the token grants. Authorization then
    /// follows the token, not the rules.
    pub token_access: Option<Vec<crate::token::AccessEntry>>,
}

impl Identity {
    /// An anonymous identity.
    pub fn anonymous() -> Identity {
        Identity::default()
    }

    /// Whether the request carried no credentials.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_none()
    }
}

/// What access rules apply to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A repository by name.
    Repository(&'a str),
    /// The repository listing (`/v2/_catalog`, scope `registry:catalog:*`).
    Catalog,
    /// The management API (`/api/v1/registry/...`, scope `registry:admin:*`): registry
    /// administrators only.
    Admin,
}

#[derive(Debug, Clone)]
struct Rule {
    patterns: Vec<Pattern>,
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    actions: BTreeSet<Action>,
}

/// The compiled access rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    anonymous_pull: Vec<Pattern>,
    admin_users: BTreeSet<String>,
    admin_groups: BTreeSet<String>,
    groups_of: BTreeMap<String, Vec<String>>,
}

fn parse_actions(list: &[String]) -> Result<BTreeSet<Action>, AuthError> {
    let mut out = BTreeSet::new();
    for a in list {
        if a == "*" {
            out.extend(Action::ALL);
        } else {
            out.insert(Action::parse(a).ok_or_else(|| {
                AuthError::Config(format!(
                    "unknown action {a:?} (expected pull, push, delete or *)"
                ))
            })?);
        }
    }
    Ok(out)
}

fn parse_patterns(list: &[String]) -> Result<Vec<Pattern>, AuthError> {
    list.iter().map(|p| Pattern::parse(p)).collect()
}

impl Rules {
    /// Compile the `auth` block's groups, access rules, anonymous and admin lists.
    pub fn from_config(cfg: &AuthConfig) -> Result<Rules, AuthError> {
        let mut groups_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (group, users) in &cfg.groups {
            for u in users {
                groups_of.entry(u.clone()).or_default().push(group.clone());
            }
        }
        let mut rules = Vec::new();
        for (i, r) in cfg.access.iter().enumerate() {
            if r.repositories.is_empty() || r.actions.is_empty() {
                return Err(AuthError::Config(format!(
                    "auth.access[{i}] needs repositories and actions"
                )));
            }
            for g in &r.groups {
                if !cfg.groups.contains_key(g) {
                    return Err(AuthError::Config(format!(
                        "auth.access[{i}] names group {g:?}, which auth.groups does not define"
                    )));
                }
            }
            rules.push(Rule {
                patterns: parse_patterns(&r.repositories)?,
                users: r.users.iter().cloned().collect(),
                groups: r.groups.iter().cloned().collect(),
                actions: parse_actions(&r.actions)?,
            });
        }
        Ok(Rules {
            rules,
            anonymous_pull: parse_patterns(&cfg.anonymous.pull)?,
            admin_users: cfg.admins.users.iter().cloned().collect(),
            admin_groups: cfg.admins.groups.iter().cloned().collect(),
            groups_of,
        })
    }

    /// The identity of an authenticated user: groups and admin flag from the config.
    pub fn identity_of(&self, user: &str) -> Identity {
        let groups = self.groups_of.get(user).cloned().unwrap_or_default();
        let admin =
            self.admin_users.contains(user) || groups.iter().any(|g| self.admin_groups.contains(g));
        Identity {
            user: Some(user.to_string()),
            groups,
            admin,
            token_access: None,
        }
    }

    /// Whether anonymous pulls are configured at all.
    pub fn anonymous_pull_enabled(&self) -> bool {
        !self.anonymous_pull.is_empty()
    }

    /// Whether the rules (ignoring any token) let `identity` do `action` on `resource`.
    /// The catalog is open to every authenticated user, and to anonymous requests when
    /// anonymous pull is configured (the listing itself is filtered by pull rights).
    pub fn allows(&self, identity: &Identity, resource: &Resource<'_>, action: Action) -> bool {
        if identity.admin {
            return true;
        }
        let repo = match resource {
            Resource::Catalog => {
                return action == Action::Pull
                    && (!identity.is_anonymous() || self.anonymous_pull_enabled());
            }
            Resource::Admin => return false,
            Resource::Repository(r) => *r,
        };
        if action == Action::Pull && self.anonymous_pull.iter().any(|p| p.matches(repo)) {
            return true;
        }
        let Some(user) = &identity.user else {
            return false;
        };
        self.rules.iter().any(|r| {
            r.actions.contains(&action)
                && (r.users.contains(user) || identity.groups.iter().any(|g| r.groups.contains(g)))
                && r.patterns.iter().any(|p| p.matches(repo))
        })
    }

    /// Users the rules name that `known` says do not exist (for a warning at start).
    pub fn unknown_users(&self, known: impl Fn(&str) -> bool) -> Vec<String> {
        let mut names: BTreeSet<&String> = self.admin_users.iter().collect();
        names.extend(self.groups_of.keys());
        for r in &self.rules {
            names.extend(r.users.iter());
        }
        names.into_iter().filter(|n| !known(n)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccessRule, AdminsConfig, AnonymousConfig};

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn patterns() {
        assert!(p("team/*").matches("team/app"));
        assert!(!p("team/*").matches("team/app/x"));
        assert!(!p("team/*").matches("team"));
        assert!(!p("team/*").matches("other/app"));
        assert!(p("team/**").matches("team/app/x"));
        assert!(p("team/**").matches("team"));
        assert!(p("**").matches("a/b/c"));
        assert!(p("*/app").matches("x/app"));
        assert!(!p("*/app").matches("x/y/app"));
        assert!(p("org/**/cache").matches("org/cache"));
        assert!(p("org/**/cache").matches("org/a/b/cache"));
        assert!(!p("org/**/cache").matches("org/a/b/cache2"));
        assert!(p("lib/app-*").matches("lib/app-1"));
        assert!(!p("lib/app-*").matches("lib/web-1"));
        assert!(p("exact/name").matches("exact/name"));
        assert!(!p("exact/name").matches("exact/name2"));
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a//b").is_err());
        assert!(Pattern::parse("a/**x").is_err());
        assert!(Pattern::parse("A/b").is_err());
    }

    #[test]
    fn rules_grant_by_user_group_admin_and_anonymous() {
        let mut cfg = AuthConfig::default();
        cfg.groups.insert("devs".into(), vec!["bob".into()]);
        cfg.groups.insert("ops".into(), vec!["olga".into()]);
        cfg.access = vec![
            AccessRule {
                repositories: vec!["team/*".into()],
                users: vec!["alice".into()],
                groups: vec![],
                actions: vec!["pull".into(), "push".into()],
            },
            AccessRule {
                repositories: vec!["team/**".into()],
                users: vec![],
                groups: vec!["devs".into()],
                actions: vec!["*".into()],
            },
        ];
        cfg.anonymous = AnonymousConfig {
            pull: vec!["public/**".into()],
        };
        cfg.admins = AdminsConfig {
            users: vec![],
            groups: vec!["ops".into()],
        };
        let r = Rules::from_config(&cfg).unwrap();
        let alice = r.identity_of("alice");
        let bob = r.identity_of("bob");
        let olga = r.identity_of("olga");
        let anon = Identity::anonymous();
        let repo = |n| Resource::Repository(n);
        assert!(r.allows(&alice, &repo("team/app"), Action::Push));
        assert!(!r.allows(&alice, &repo("team/app"), Action::Delete));
        assert!(!r.allows(&alice, &repo("team/app/sub"), Action::Pull));
        assert!(r.allows(&alice, &repo("public/x"), Action::Pull));
        assert!(!r.allows(&alice, &repo("public/x"), Action::Push));
        assert!(r.allows(&bob, &repo("team/app/sub"), Action::Delete));
        assert!(!r.allows(&bob, &repo("other"), Action::Pull));
        assert!(olga.admin);
        assert!(r.allows(&olga, &repo("anything/at/all"), Action::Delete));
        assert!(r.allows(&anon, &repo("public/x"), Action::Pull));
        assert!(!r.allows(&anon, &repo("public/x"), Action::Push));
        assert!(!r.allows(&anon, &repo("team/app"), Action::Pull));
        assert!(r.allows(&anon, &Resource::Catalog, Action::Pull));
        assert_eq!(r.unknown_users(|u| u == "alice"), vec!["bob", "olga"]);

        cfg.access[0].groups = vec!["nope".into()];
        assert!(Rules::from_config(&cfg).is_err());
        cfg.access[0].groups = vec![];
        cfg.access[0].actions = vec!["write".into()];
        assert!(Rules::from_config(&cfg).is_err());
    }
}
