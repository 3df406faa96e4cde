//! Variable expansion with the semantics of BuildKit's shell lexer (`frontend/dockerfile/shell`).
//!
//! The builder expands `$VAR`, `${VAR}` and the `${VAR<modifier>}` forms in the arguments of
//! ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, ARG and in
//! `RUN --mount` options. Quotes are removed and escapes resolved at the same time. RUN, CMD
//! and ENTRYPOINT are not expanded by the builder: the shell does it in the container.

use std::collections::BTreeSet;

use thiserror::Error;

/// Looks a variable up by name; `None` means unset (different from set to empty).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ExpandError {
    /// The word being expanded.
    pub word: String,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

/// The kinds of expansion errors, with BuildKit's messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExpandErrorKind {
    /// A `'` without its closing quote.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// A `"` without its closing quote.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// The input ended while looking for this character.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
    /// `${` without its `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${v/pattern` without the `/` before the replacement.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:...}` or `${{...}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A modifier other than `-`, `+`, `?`, `#`, `%`, `/` (with or without `:`).
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${...}` nested deeper than 256 levels.
    #[error("substitutions nested too deeply")]
    TooDeep,
    /// `${v?msg}` with `v` unset, or `${v:?msg}` with `v` unset or empty.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The (expanded) message, or the default one.
        message: String,
    },
    /// A `#`, `%` or `/` pattern with a bad escape.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The full result of expanding one word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The expanded word, quotes removed, with inner whitespace kept.
    pub value: String,
    /// The word split on unquoted whitespace after expansion.
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub used: BTreeSet<String>,
    /// Variables that were referenced and unset.
    pub unset: BTreeSet<String>,
}

/// Expands variables in `word`, removes quotes and resolves escapes (BuildKit's `ProcessWord`).
///
/// `escape` is the Dockerfile's escape character (`\` or `` ` ``). Unset variables expand
/// to the empty string.
pub fn expand(word: &str, vars: Lookup<'_>, escape: char) -> Result<String, ExpandError> {
    expand_detailed(word, vars, escape).map(|e| e.value)
}

/// Expands like [`expand`] and splits the result into words (BuildKit's `ProcessWords`).
///
/// Splitting happens on whitespace that is neither quoted, escaped, nor inside a quoted
/// expansion; whitespace coming from an unquoted variable splits, as in a shell.
pub fn expand_words(
    word: &str,
    vars: Lookup<'_>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    expand_detailed(word, vars, escape).map(|e| e.words)
}

/// Expands like [`expand`] and also reports the words and which variables were referenced.
pub fn expand_detailed(
    word: &str,
    vars: Lookup<'_>,
    escape: char,
) -> Result<Expansion, ExpandError> {
    let mut lx = Lexer::new(word, vars, escape, LexOptions::default());
    match lx.process_stop_on(None, false) {
        Ok((value, words)) => Ok(Expansion {
            value,
            words: words.into_iter().map(|w| w.text).collect(),
            used: lx.used,
            unset: lx.unset,
        }),
        Err(kind) => Err(ExpandError {
            word: word.to_owned(),
            kind,
        }),
    }
}

/// Options of the lexer that the parser needs (heredoc detection) besides plain expansion.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LexOptions {
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as they are.
    pub skip_unset: bool,
}

/// One word of a split result with the char index where it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexWord {
    pub text: String,
    pub start: usize,
}

/// Runs the lexer with options; returns the value and the words with their char positions.
pub(crate) fn lex(
    word: &str,
    vars: Lookup<'_>,
    escape: char,
    opts: LexOptions,
) -> Result<(String, Vec<LexWord>), ExpandErrorKind> {
    Lexer::new(word, vars, escape, opts).process_stop_on(None, opts.raw_escapes)
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<LexWord>,
    in_word: bool,
    start: usize,
}

impl Words {
    fn add_char(&mut self, ch: char, at: usize) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(LexWord {
                    text: std::mem::take(&mut self.word),
                    start: self.start,
                });
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch, at);
        }
    }

    fn add_raw_char(&mut self, ch: char, at: usize) {
        if !self.in_word {
            self.start = at;
        }
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str, at: usize) {
        for ch in s.chars() {
            self.add_char(ch, at);
        }
    }

    fn add_raw_string(&mut self, s: &str, at: usize) {
        if !self.in_word {
            self.start = at;
        }
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<LexWord> {
        if !self.word.is_empty() {
            self.words.push(LexWord {
                text: std::mem::take(&mut self.word),
                start: self.start,
            });
        }
        self.words
    }
}

struct Lexer<'v> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    vars: Lookup<'v>,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
    depth: usize,
}

/// Nesting limit for `${...}`, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 256;

type Res<T> = Result<T, ExpandErrorKind>;

impl<'v> Lexer<'v> {
    fn new(word: &str, vars: Lookup<'v>, escape: char, opts: LexOptions) -> Self {
        Lexer {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            raw_quotes: opts.raw_quotes,
            raw_escapes: opts.raw_escapes,
            skip_unset: opts.skip_unset,
            vars,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = (self.vars)(name);
        if v.is_some() {
            self.used.insert(name.to_owned());
        } else {
            self.unset.insert(name.to_owned());
        }
        v
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Res<(String, Vec<LexWord>)> {
        if self.depth >= MAX_DEPTH {
            return Err(ExpandErrorKind::TooDeep);
        }
        self.depth += 1;
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Res<(String, Vec<LexWord>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            let at = self.pos;
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp, at);
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp, at);
                }
                '\'' => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp, at);
                }
                '"' => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp, at);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch, at);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => {
                                words.add_raw_char(c, at);
                                result.push(c);
                            }
                        }
                    } else {
                        words.add_char(ch, at);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(c) = stop {
            return Err(ExpandErrorKind::UnexpectedEnd(c));
        }
        Ok((result, words.finish()))
    }

    /// `<<` keeps the blanks after it in its word, so `<< EOF` is one word (a heredoc opener).
    fn process_possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.pos += 1;
        let mut out = "<<".to_owned();
        while let Some(c @ (' ' | '\t' | '\r' | '\n')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    fn process_single_quote(&mut self) -> Res<String> {
        let mut result = String::new();
        let q = self.next();
        if self.raw_quotes {
            result.extend(q);
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Res<String> {
        let mut result = String::new();
        let q = self.next();
        if self.raw_quotes {
            result.extend(q);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                ch = c;
                                self.pos += 1;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek() {
                    if !d.is_numeric() {
                        break;
                    }
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !ch.is_numeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    fn process_dollar(&mut self) -> Res<String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            _ => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut modifier = display_opt(first);
        match first {
            Some('}') => {
                let v = self.get_env(&name);
                Ok(match v {
                    Some(v) => v,
                    None if self.skip_unset => format!("${{{name}}}"),
                    None => String::new(),
                })
            }
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut null_is_unset = false;
                let mut ch = first;
                if first == Some(':') {
                    null_is_unset = true;
                    ch = self.next();
                    modifier.push_str(&display_opt(ch));
                }
                let raw = matches!(ch, Some('#' | '%'));
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                match ch {
                    Some('-') => {
                        if !set || (null_is_unset && value.is_empty()) {
                            Ok(word)
                        } else {
                            Ok(value)
                        }
                    }
                    Some('+') => {
                        if !set || (null_is_unset && value.is_empty()) {
                            Ok(String::new())
                        } else {
                            Ok(word)
                        }
                    }
                    Some('?') => {
                        if !set {
                            let message = if word.is_empty() {
                                "is not allowed to be unset".to_owned()
                            } else {
                                word
                            };
                            return Err(ExpandErrorKind::Required { name, message });
                        }
                        if null_is_unset && value.is_empty() {
                            let message = if word.is_empty() {
                                "is not allowed to be empty".to_owned()
                            } else {
                                word
                            };
                            return Err(ExpandErrorKind::Required { name, message });
                        }
                        Ok(value)
                    }
                    Some(c @ ('%' | '#')) => {
                        let (pattern, greedy) = match word.strip_prefix(c) {
                            Some(rest) => (rest.to_owned(), true),
                            None => (word, false),
                        };
                        let pat = compile_shell_pattern(&pattern)?;
                        if c == '%' {
                            Ok(trim_suffix(&pat, &value, greedy))
                        } else {
                            Ok(trim_prefix(&pat, &value, greedy))
                        }
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier(modifier)),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandErrorKind::MissingSlash);
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let pat = compile_shell_pattern(&pattern)?;
                Ok(replace(&pat, &value, &replacement, replace_all))
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier(modifier)),
        }
    }
}

fn display_opt(c: Option<char>) -> String {
    c.map(String::from).unwrap_or_else(|| "\u{FFFD}".to_owned())
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// One element of a `${v#pattern}` shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sp {
    Lit(char),
    /// `?`: one character (not a newline, as Go's regexp `.`).
    One,
    /// `*`: any run of characters (no newline).
    Star,
}

fn compile_shell_pattern(p: &str) -> Res<Vec<Sp>> {
    let cs: Vec<char> = p.chars().collect();
    let mut out = Vec::with_capacity(cs.len());
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '*' => out.push(Sp::Star),
            '?' => out.push(Sp::One),
            '\\' => match cs.get(i + 1) {
                Some('}' | '/') => {}
                Some(c @ ('*' | '?' | '\\')) => {
                    out.push(Sp::Lit(*c));
                    i += 1;
                }
                other => {
                    return Err(ExpandErrorKind::InvalidPattern {
                        pattern: p.to_owned(),
                        reason: match other {
                            Some(c) => format!("invalid escape '\\{c}'"),
                            None => "trailing escape".to_owned(),
                        },
                    });
                }
            },
            c => out.push(Sp::Lit(c)),
        }
        i += 1;
    }
    Ok(out)
}

/// NFA simulation of a shell pattern from `s[0]`: calls `accept(k)` for every `k` such that
/// the pattern matches `s[..k]` exactly, in increasing order.
fn sp_run(p: &[Sp], s: &[char], mut accept: impl FnMut(usize)) {
    let m = p.len();
    let mut cur = vec![false; m + 1];
    let closure = |set: &mut Vec<bool>| {
        for i in 0..m {
            if set[i] && p[i] == Sp::Star {
                set[i + 1] = true;
            }
        }
    };
    cur[0] = true;
    closure(&mut cur);
    if cur[m] {
        accept(0);
    }
    for (k, &c) in s.iter().enumerate() {
        let mut nxt = vec![false; m + 1];
        let mut any = false;
        for i in 0..m {
            if !cur[i] {
                continue;
            }
            match p[i] {
                Sp::Lit(l) if l == c => {
                    nxt[i + 1] = true;
                    any = true;
                }
                Sp::One if c != '\n' => {
                    nxt[i + 1] = true;
                    any = true;
                }
                Sp::Star if c != '\n' => {
                    nxt[i] = true;
                    any = true;
                }
                _ => {}
            }
        }
        if !any {
            return;
        }
        closure(&mut nxt);
        if nxt[m] {
            accept(k + 1);
        }
        cur = nxt;
    }
}

/// Shortest (or longest) `k` with `p` matching `s[..k]`.
fn prefix_match(p: &[Sp], s: &[char], greedy: bool) -> Option<usize> {
    let mut best = None;
    sp_run(p, s, |k| {
        if best.is_none() || greedy {
            best = Some(k);
        }
    });
    best
}

fn trim_prefix(p: &[Sp], value: &str, greedy: bool) -> String {
    let s: Vec<char> = value.chars().collect();
    match prefix_match(p, &s, greedy) {
        Some(k) => s[k..].iter().collect(),
        None => value.to_owned(),
    }
}

fn trim_suffix(p: &[Sp], value: &str, greedy: bool) -> String {
    let mut s: Vec<char> = value.chars().collect();
    s.reverse();
    let mut rp = p.to_vec();
    rp.reverse();
    match prefix_match(&rp, &s, greedy) {
        Some(k) => s[k..].iter().rev().collect(),
        None => value.to_owned(),
    }
}

/// Leftmost match at or after `from`, longest at that start (Go's leftmost greedy `.*`).
///
/// One pass of an NFA whose states remember the earliest start reaching them: O(len * states).
fn find_from(p: &[Sp], s: &[char], from: usize) -> Option<(usize, usize)> {
    let m = p.len();
    let min = |a: Option<usize>, b: Option<usize>| match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    };
    let closure = |set: &mut Vec<Option<usize>>| {
        for i in 0..m {
            if p[i] == Sp::Star {
                set[i + 1] = min(set[i + 1], set[i]);
            }
        }
    };
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Vec<Option<usize>> = vec![None; m + 1];
    for k in from..=s.len() {
        if best.is_none() {
            cur[0] = min(cur[0], Some(k));
        }
        closure(&mut cur);
        if let Some(st) = cur[m] {
            best = match best {
                Some((bs, be)) if bs < st || (bs == st && be >= k) => Some((bs, be)),
                _ => Some((st, k)),
            };
        }
        let Some(&c) = s.get(k) else {
            break;
        };
        let mut nxt: Vec<Option<usize>> = vec![None; m + 1];
        for i in 0..m {
            let Some(st) = cur[i] else {
                continue;
            };
            if best.is_some_and(|(bs, _)| st > bs) {
                continue;
            }
            match p[i] {
                Sp::Lit(l) if l == c => nxt[i + 1] = min(nxt[i + 1], Some(st)),
                Sp::One if c != '\n' => nxt[i + 1] = min(nxt[i + 1], Some(st)),
                Sp::Star if c != '\n' => nxt[i] = min(nxt[i], Some(st)),
                _ => {}
            }
        }
        if best.is_some() && nxt.iter().all(Option::is_none) {
            break;
        }
        cur = nxt;
    }
    best
}

/// `${v/pattern/replacement}` and `${v//pattern/replacement}` with Go's `ReplaceAllString` loop.
fn replace(p: &[Sp], value: &str, replacement: &str, all: bool) -> String {
    let s: Vec<char> = value.chars().collect();
    if !all {
        return match find_from(p, &s, 0) {
            Some((a, b)) => {
                let mut out: String = s[..a].iter().collect();
                out.push_str(replacement);
                out.extend(&s[b..]);
                out
            }
            None => value.to_owned(),
        };
    }
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= s.len() {
        let Some((a, b)) = find_from(p, &s, search) else {
            break;
        };
        out.extend(&s[last_end..a]);
        if b > last_end || a == 0 {
            out.push_str(replacement);
        }
        last_end = b;
        if search + 1 > b {
            search += 1;
        } else {
            search = b;
        }
    }
    if last_end <= s.len() {
        out.extend(&s[last_end..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_patterns() {
        let p = compile_shell_pattern("*x*y").unwrap();
        assert_eq!(trim_prefix(&p, "xxyy", false), "y");
        let p = compile_shell_pattern("\\**").unwrap();
        assert_eq!(trim_suffix(&p, "xx**", true), "xx");
        assert!(compile_shell_pattern("\\x").is_err());
        assert!(compile_shell_pattern("\\").is_err());
    }
}
