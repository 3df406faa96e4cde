//! `.dockerignore` with the semantics of moby's `patternmatcher` and `ignorefile`.
//!
//! Each non-comment line is a pattern with Go `filepath.Match` syntax plus `**` (any number
//! of directories, zero included), cleaned with `path.Clean`, a leading `/` dropped. A line
//! starting with `!` is an exception. A path is excluded when the last pattern that matches
//! it, or matches one of its parent directories, is not an exception. Comments are lines
//! whose first character is `#`; this is not `.gitignore` (no trailing-`/` meaning, no
//! basename matching anywhere: `*.log` matches only at the root).

use std::path::{Path, PathBuf};

use thiserror::Error;

use go_filepath::{CharClass, clean_path, dir_of, go_match};

/// A `.dockerignore` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {kind}")]
pub struct DockerIgnoreError {
    /// 1-based line of the bad pattern.
    pub line: usize,
    /// What is wrong.
    pub kind: DockerIgnoreErrorKind,
}

/// The reasons a `.dockerignore` is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DockerIgnoreErrorKind {
    /// A line that is just `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    /// A malformed pattern (unclosed `[`, trailing `\`, bad range).
    #[error("syntax error in pattern {0:?}")]
    BadPattern(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: `[^/]*`.
    Star,
    /// `?`: `[^/]`.
    One,
    /// `**` (with the following `/`) inside a pattern: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    AnyAll,
    Class(CharClass),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix(String),
    Suffix(String),
    Tokens(Vec<Tok>),
}

/// One pattern of a `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    cleaned: String,
    exception: bool,
    line: usize,
    kind: Kind,
}

impl IgnorePattern {
    /// The pattern after cleaning, without its `!`.
    pub fn pattern(&self) -> &str {
        &self.cleaned
    }

    /// Whether it is an exception (`!pattern`).
    pub fn is_exception(&self) -> bool {
        self.exception
    }

    /// The 1-based line it came from.
    pub fn line(&self) -> usize {
        self.line
    }

    fn compile(cleaned: &str) -> Kind {
        // moby's Pattern.compile: exact, prefix (`dir/**`), suffix (`**/x`) or regexp.
        let cs: Vec<char> = cleaned.chars().collect();
        let mut toks = Vec::new();
        let mut detected = 0; // 0 exact, 1 prefix, 2 suffix, 3 regexp
        let mut i = 0;
        let mut first = true;
        while i < cs.len() {
            let ch = cs[i];
            i += 1;
            match ch {
                '*' if cs.get(i) == Some(&'*') => {
                    i += 1;
                    if cs.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == cs.len() {
                        if detected == 0 {
                            detected = 1;
                        } else {
                            toks.push(Tok::AnyAll);
                            detected = 3;
                        }
                    } else {
                        toks.push(Tok::AnyDirs);
                        detected = 3;
                    }
                    if first {
                        detected = 2;
                    }
                }
                '*' => {
                    toks.push(Tok::Star);
                    detected = 3;
                }
                '?' => {
                    toks.push(Tok::One);
                    detected = 3;
                }
                '\\' => match cs.get(i) {
                    Some(c) => {
                        toks.push(Tok::Lit(*c));
                        i += 1;
                        detected = 3;
                    }
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => {
                    match CharClass::parse(&cs[i - 1..]) {
                        Some((class, used)) => {
                            toks.push(Tok::Class(class));
                            i += used - 1;
                        }
                        None => toks.push(Tok::Lit('[')),
                    }
                    detected = 3;
                }
                c => toks.push(Tok::Lit(c)),
            }
            first = false;
        }
        match detected {
            0 => Kind::Exact,
            1 => Kind::Prefix(cleaned[..cleaned.len() - 2].to_owned()),
            2 => Kind::Suffix(cleaned[2..].to_owned()),
            _ => Kind::Tokens(toks),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Tokens(t) => match_tokens(t, &path.chars().collect::<Vec<_>>()),
        }
    }
}

/// Full match of `toks` against `s` with regexp semantics, in O(len(toks) * len(s)).
fn match_tokens(toks: &[Tok], s: &[char]) -> bool {
    let n = s.len();
    // next[j]: toks[i+1..] matches s[j..]; cur[j]: toks[i..] matches s[j..].
    let mut next = vec![false; n + 1];
    next[n] = true;
    for tok in toks.iter().rev() {
        let mut cur = vec![false; n + 1];
        for j in (0..=n).rev() {
            let c = s.get(j).copied();
            cur[j] = match tok {
                Tok::Lit(l) => c == Some(*l) && next[j + 1],
                Tok::One => c.is_some_and(|c| c != '/') && next[j + 1],
                Tok::Class(cl) => c.is_some_and(|c| cl.matches(c)) && next[j + 1],
                Tok::Star => next[j] || (c.is_some_and(|c| c != '/') && cur[j + 1]),
                Tok::AnyAll => next[j] || (c.is_some_and(|c| c != '\n') && cur[j + 1]),
                Tok::AnyDirs => next[j],
            };
        }
        if let Tok::AnyDirs = tok {
            // `(.*/)?`: skip it, or consume up to and including some later `/` (no newline).
            let mut reach = vec![false; n + 1];
            for j in (0..n).rev() {
                reach[j] = (s[j] == '/' && next[j + 1]) || (s[j] != '\n' && reach[j + 1]);
            }
            for j in 0..=n {
                cur[j] = cur[j] || reach[j];
            }
        }
        next = cur;
    }
    next[0]
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerIgnore {
    patterns: Vec<IgnorePattern>,
}

impl DockerIgnore {
    /// Parses `.dockerignore` contents (moby's `ignorefile.ReadAll` then `patternmatcher.New`).
    pub fn parse(contents: &str) -> Result<DockerIgnore, DockerIgnoreError> {
        let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
        let mut patterns = Vec::new();
        for (idx, raw) in contents.lines().enumerate() {
            let line = idx + 1;
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let invert = p.starts_with('!');
            if invert {
                p = p[1..].trim();
            }
            let mut pattern = if p.is_empty() {
                String::new()
            } else {
                let c = clean_path(p);
                if c.len() > 1 && c.starts_with('/') {
                    c[1..].to_owned()
                } else {
                    c
                }
            };
            if invert {
                pattern.insert(0, '!');
            }
            // patternmatcher.New: trim, clean again (the `!` included), split off the `!`.
            let cleaned = clean_path(pattern.trim());
            let (exception, cleaned) = match cleaned.strip_prefix('!') {
                Some("") => {
                    return Err(DockerIgnoreError {
                        line,
                        kind: DockerIgnoreErrorKind::LoneExclamation,
                    });
                }
                Some(rest) => (true, rest.to_owned()),
                None => (false, cleaned),
            };
            let chars: Vec<char> = cleaned.chars().collect();
            if go_match(&chars, &['.']).is_err() {
                return Err(DockerIgnoreError {
                    line,
                    kind: DockerIgnoreErrorKind::BadPattern(cleaned),
                });
            }
            let kind = IgnorePattern::compile(&cleaned);
            patterns.push(IgnorePattern {
                cleaned,
                exception,
                line,
                kind,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// The patterns in file order.
    pub fn patterns(&self) -> &[IgnorePattern] {
        &self.patterns
    }

    /// Whether there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the file has exceptions (`!` lines).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Index of the pattern deciding `rel_path` (the last one matching it or a parent).
    fn decisive(&self, rel_path: &str) -> Option<(usize, bool)> {
        let file = normalize(rel_path)?;
        let parent = dir_of(&file);
        let parent_dirs: Vec<&str> = if parent == "." {
            Vec::new()
        } else {
            parent.split('/').collect()
        };
        let mut matched = false;
        let mut decided = None;
        for (i, p) in self.patterns.iter().enumerate() {
            if p.exception != matched {
                continue;
            }
            let mut m = p.matches(&file);
            if !m {
                for k in 1..=parent_dirs.len() {
                    if p.matches(&parent_dirs[..k].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exception;
                decided = Some((i, matched));
            }
        }
        decided
    }

    /// Whether `rel_path` (relative to the context, `/`-separated) is excluded.
    ///
    /// A leading `/` or `./` is ignored; the context root itself is never excluded.
    pub fn matches(&self, rel_path: &str) -> bool {
        self.decisive(rel_path).is_some_and(|(_, m)| m)
    }

    /// Whether a walker may skip the directory `dir` without looking inside: it is excluded
    /// and no later exception could re-include anything beneath it.
    pub fn excludes_dir_entirely(&self, dir: &str) -> bool {
        let Some((k, true)) = self.decisive(dir) else {
            return false;
        };
        let Some(dir) = normalize(dir) else {
            return false;
        };
        let dir_segs: Vec<&str> = dir.split('/').collect();
        !self.patterns[k + 1..]
            .iter()
            .filter(|p| p.exception)
            .any(|p| could_match_beneath(&p.cleaned, &dir_segs))
    }
}

/// Cleans a path relative to the context; `None` for the context root.
fn normalize(rel_path: &str) -> Option<String> {
    let c = clean_path(rel_path);
    let c = c.trim_start_matches('/');
    if c.is_empty() || c == "." {
        None
    } else {
        Some(c.to_owned())
    }
}

/// Conservatively, whether `pattern` can match a path strictly under `dir`: its segments
/// must fit the directory's segments until a `**` (which may match anything after it).
fn could_match_beneath(pattern: &str, dir: &[&str]) -> bool {
    let psegs: Vec<&str> = pattern.split('/').collect();
    for (i, d) in dir.iter().enumerate() {
        let Some(p) = psegs.get(i) else {
            return false;
        };
        if p.contains("**") {
            return true;
        }
        let pc: Vec<char> = p.chars().collect();
        let dc: Vec<char> = d.chars().collect();
        if !go_match(&pc, &dc).unwrap_or(true) {
            return false;
        }
    }
    psegs.len() > dir.len()
}

/// The ignore file for a build: `<Dockerfile name>.dockerignore` next to the Dockerfile if
/// it exists, else `<context>/.dockerignore` if it exists.
pub fn find_ignore_file(context_dir: &Path, dockerfile_path: &Path) -> Option<PathBuf> {
    if let Some(name) = dockerfile_path.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        let candidate = dockerfile_path.with_file_name(specific);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let root = context_dir.join(".dockerignore");
    root.is_file().then_some(root)
}
