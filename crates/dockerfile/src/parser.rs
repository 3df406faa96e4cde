//! Lines, directives, continuations and heredocs: from text to instruction nodes.
//!
//! This follows BuildKit's `frontend/dockerfile/parser`: parser directives are only looked
//! for until the first line that is not one; comments are whole lines starting with `#`
//! (after leading whitespace); a line ending with the escape character (followed only by
//! spaces or tabs, and not itself escaped) continues on the next line, and comment or empty
//! lines inside a continuation are skipped; heredoc bodies follow the complete instruction.

use std::collections::HashSet;

use crate::ast::{Arg, Directives, Dockerfile, Heredoc, Instruction, Span, Spanned, Stage};
use crate::error::{ParseError, ParseErrorKind};
use crate::expand::{LexOptions, lex};
use crate::instructions::{self, Parsed};

/// Parses a Dockerfile.
///
/// `file_name` only labels errors. The result has at least one stage; values are
/// unexpanded (see [`crate::expand`]).
pub fn parse(source: &str, file_name: &str) -> Result<Dockerfile, ParseError> {
    Parser::new(source, file_name).run()
}

/// A logical line (continuations joined) and where each piece came from.
pub(crate) struct Logical {
    pub text: String,
    segs: Vec<Seg>,
}

#[derive(Clone, Copy)]
struct Seg {
    start: usize,
    line: usize,
    col: usize,
}

impl Logical {
    fn new() -> Self {
        Logical {
            text: String::new(),
            segs: Vec::new(),
        }
    }

    fn push(&mut self, s: &str, line: usize, col: usize) {
        self.segs.push(Seg {
            start: self.text.len(),
            line,
            col,
        });
        self.text.push_str(s);
    }

    /// Line and column of the byte offset `off` of the text.
    pub fn pos(&self, off: usize) -> (usize, usize) {
        let idx = self
            .segs
            .partition_point(|s| s.start <= off)
            .saturating_sub(1);
        let Some(seg) = self.segs.get(idx) else {
            return (1, 1);
        };
        let off = off.min(self.text.len());
        let chars = self
            .text
            .get(seg.start..off)
            .map(|s| s.chars().count())
            .unwrap_or(0);
        (seg.line, seg.col + chars)
    }
}

/// What instruction builders need to place errors.
pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub logical: &'a Logical,
    pub escape: char,
}

impl Ctx<'_> {
    /// An error at byte offset `off` of the logical line.
    pub fn err(&self, off: usize, kind: ParseErrorKind) -> ParseError {
        let (line, column) = self.logical.pos(off);
        ParseError {
            file: self.file.to_owned(),
            line,
            column,
            kind,
        }
    }
}

/// A word of the logical line and its byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tok {
    pub text: String,
    pub off: usize,
}

/// An instruction split into keyword, flags and arguments (BuildKit's `splitCommand`).
#[derive(Debug, Clone)]
pub(crate) struct RawNode {
    pub keyword: String,
    pub kw_off: usize,
    pub flags: Vec<Tok>,
    pub args: String,
    pub args_off: usize,
}

/// A heredoc read after its instruction, body as in the file.
#[derive(Debug, Clone)]
pub(crate) struct ReadHeredoc {
    pub heredoc: Heredoc,
}

/// Go's `reWhitespace` / `tokenWhitespace`: `[\t\v\f\r ]`.
pub(crate) fn is_token_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// RE2's `\s`: `[\t\n\f\r ]`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start().starts_with('#')
}

/// Removes a trailing line-continuation escape; returns the rest and whether the line ends.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape)
        && !before.ends_with(escape)
    {
        return (before, false);
    }
    (line, true)
}

/// Splits a line into keyword, flags and arguments; `base` is its offset in the logical line.
pub(crate) fn split_command(line: &str, base: usize) -> RawNode {
    let lead = line.len() - line.trim_start().len();
    let t = line.trim();
    let base = base + lead;
    let kw_end = t.find(is_token_ws).unwrap_or(t.len());
    let keyword = t[..kw_end].to_owned();
    let mut flags = Vec::new();
    let mut args = String::new();
    let mut args_off = base + t.len();
    if kw_end < t.len() {
        let rest_start = t[kw_end..]
            .find(|c: char| !is_token_ws(c))
            .map(|i| kw_end + i)
            .unwrap_or(t.len());
        let rest = &t[rest_start..];
        let (args_rel, fl) = extract_builder_flags(rest);
        flags = fl
            .into_iter()
            .map(|(text, off)| Tok {
                text,
                off: base + rest_start + off,
            })
            .collect();
        let a = &rest[args_rel..];
        let a_lead = a.len() - a.trim_start().len();
        args = a.trim().to_owned();
        args_off = base + rest_start + args_rel + a_lead;
    }
    RawNode {
        keyword,
        kw_off: base,
        flags,
        args,
        args_off,
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Spaces,
    Word,
    Quote,
}

/// BuildKit's `extractBuilderFlags`: leading `--flag[=value]` words (quotes removed, `\`
/// escapes) and the byte offset where the arguments start.
fn extract_builder_flags(line: &str) -> (usize, Vec<(String, usize)>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let n = chars.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    while i <= n {
        let (off, mut ch) = if i < n { chars[i] } else { (line.len(), '\0') };
        if phase == Phase::Spaces {
            if i == n {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            if ch != '-' || i + 1 == n || chars[i + 1].1 != '-' {
                return (off, words);
            }
            phase = Phase::Word;
            word_start = off;
        }
        if i == n {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push((word, word_start));
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (off, words);
                }
                if blank_ok || !word.is_empty() {
                    words.push((std::mem::take(&mut word), word_start));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            if ch == '\\' {
                if i + 1 == n {
                    i += 1;
                    continue;
                }
                i += 1;
                ch = chars[i].1;
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        if ch == '\\' {
            if i + 1 == n {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            ch = chars[i].1;
        }
        word.push(ch);
        i += 1;
    }
    (line.len(), words)
}

/// Go's `reWhitespace.Split`: words separated by runs of `[\t\v\f\r ]`.
pub(crate) fn split_ws(s: &str, base: usize) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if is_token_ws(c) {
            if let Some(st) = start.take() {
                out.push(Tok {
                    text: s[st..i].to_owned(),
                    off: base + st,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push(Tok {
            text: s[st..].to_owned(),
            off: base + st,
        });
    }
    out
}

/// BuildKit's `parseWords`: whitespace-separated words keeping quotes and escapes.
pub(crate) fn parse_words(rest: &str, base: usize, escape: char) -> Vec<Tok> {
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let n = chars.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut word_start = 0;
    let mut i = 0;
    while i <= n {
        let (off, mut ch) = if i < n { chars[i] } else { (rest.len(), '\0') };
        if phase == Phase::Spaces {
            if i == n {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
            word_start = off;
        }
        if i == n {
            if blank_ok || !word.is_empty() {
                words.push(Tok {
                    text: std::mem::take(&mut word),
                    off: base + word_start,
                });
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(Tok {
                        text: std::mem::take(&mut word),
                        off: base + word_start,
                    });
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == n {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i].1;
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == n {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            ch = chars[i].1;
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// BuildKit's `parseJSON`: `Ok(None)` when the text is not a JSON array at all.
pub(crate) fn parse_json(rest: &str) -> Result<Option<Vec<String>>, ParseErrorKind> {
    let t = rest.trim_start();
    if !t.starts_with('[') {
        return Ok(None);
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(t) else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(ParseErrorKind::JsonNotStrings),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A heredoc opener parsed from a word like `<<EOF`, `<<-"EOF"` or `3<<EOF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocHead {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: Option<u32>,
}

/// BuildKit's `ParseHeredoc`: matches `^(\d*)<<(-?)\s*([^<]*)$` and reads the delimiter.
pub(crate) fn parse_heredoc_word(word: &str) -> Result<Option<HeredocHead>, ParseErrorKind> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(is_re_space);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = if digits > 0 {
        word[..digits].parse::<u32>().ok()
    } else {
        None
    };
    let none = |_: &str| None;
    let opts = LexOptions {
        skip_unset: true,
        ..LexOptions::default()
    };
    let (_, words) =
        lex(rest, &none, '\\', opts).map_err(|e| ParseErrorKind::InvalidHeredoc(e.to_string()))?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw_opts = LexOptions {
        raw_quotes: true,
        ..opts
    };
    let (_, raw_words) = lex(rest, &none, '\\', raw_opts)
        .map_err(|e| ParseErrorKind::InvalidHeredoc(e.to_string()))?;
    if raw_words.len() != words.len() {
        return Err(ParseErrorKind::InvalidHeredoc(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        )));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let name = words[0].text.clone();
    let expand = quotes(&name) == quotes(&raw_words[0].text);
    Ok(Some(HeredocHead {
        name,
        expand,
        chomp,
        fd,
    }))
}

/// BuildKit's `heredocsFromLine`: every word of the line that opens a heredoc.
fn heredocs_from_line(line: &str) -> Result<Vec<(HeredocHead, usize)>, ParseErrorKind> {
    let none = |_: &str| None;
    let opts = LexOptions {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
    };
    let words = match lex(line, &none, '\\', opts) {
        Ok((_, w)) => w,
        Err(_) => return Ok(Vec::new()),
    };
    let char_offsets: Vec<usize> = line.char_indices().map(|(i, _)| i).collect();
    let mut out = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc_word(&w.text)? {
            let off = char_offsets.get(w.start).copied().unwrap_or(0);
            out.push((h, off));
        }
    }
    Ok(out)
}

/// Strips leading tabs from every line (BuildKit's `ChompHeredocContent`).
pub(crate) fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

fn can_contain_heredoc(node: &RawNode) -> bool {
    let kw = node.keyword.to_ascii_lowercase();
    if kw == "onbuild" {
        let child = split_command(&node.args, node.args_off);
        return !child.keyword.eq_ignore_ascii_case("onbuild") && can_contain_heredoc(&child);
    }
    if !matches!(kw.as_str(), "run" | "copy" | "add") {
        return false;
    }
    !matches!(parse_json(&node.args), Ok(Some(_)))
}

struct Parser<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    next: usize,
    directives: Directives,
    directives_done: bool,
    seen_directives: HashSet<String>,
}

impl<'a> Parser<'a> {
    fn new(source: &'a str, file: &'a str) -> Self {
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        Parser {
            file,
            lines: source.split_inclusive('\n').collect(),
            next: 0,
            directives: Directives::default(),
            directives_done: false,
            seen_directives: HashSet::new(),
        }
    }

    fn take_line(&mut self) -> Option<(usize, &'a str)> {
        let l = self.lines.get(self.next).copied()?;
        self.next += 1;
        Some((self.next, l))
    }

    fn error(&self, line: usize, column: usize, kind: ParseErrorKind) -> ParseError {
        ParseError {
            file: self.file.to_owned(),
            line,
            column,
            kind,
        }
    }

    /// BuildKit's `possibleParserDirective` on one line.
    fn possible_directive(
        &mut self,
        line: &str,
        lineno: usize,
        col: usize,
    ) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Some((key, value)) = match_directive(line) else {
            self.directives_done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            self.directives_done = true;
            return Ok(());
        }
        if !self.seen_directives.insert(key.clone()) {
            return Err(self.error(lineno, col, ParseErrorKind::DuplicateDirective(key)));
        }
        match key.as_str() {
            "escape" => match value {
                "\\" => self.directives.escape = '\\',
                "`" => self.directives.escape = '`',
                _ => {
                    return Err(self.error(
                        lineno,
                        col,
                        ParseErrorKind::InvalidEscapeToken(value.to_owned()),
                    ));
                }
            },
            "syntax" => self.directives.syntax = Some(value.to_owned()),
            _ => self.directives.check = Some(value.to_owned()),
        }
        Ok(())
    }

    /// BuildKit's `processLine`: newline trimmed, optionally left-trimmed, directive
    /// checked, whole-line comment removed. Returns the text and the chars trimmed on the left.
    fn process_line(
        &mut self,
        raw: &'a str,
        strip_left: bool,
        lineno: usize,
    ) -> Result<(&'a str, usize), ParseError> {
        let t = trim_newline(raw);
        let (t, lead) = if strip_left {
            let s = t.trim_start();
            (s, t[..t.len() - s.len()].chars().count())
        } else {
            (t, 0)
        };
        self.possible_directive(t, lineno, lead + 1)?;
        Ok((if t.starts_with('#') { "" } else { t }, lead))
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut global_args: Vec<Arg> = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        let mut stage_names: HashSet<String> = HashSet::new();
        let mut any_instruction = false;
        while let Some((lineno, raw)) = self.take_line() {
            let (text, lead) = self.process_line(raw, true, lineno)?;
            let escape = self.directives.escape;
            let (content, mut is_end) = trim_continuation(text, escape);
            if is_end && content.is_empty() {
                continue;
            }
            let mut logical = Logical::new();
            logical.push(content, lineno, lead + 1);
            let start_line = lineno;
            let mut end_line = lineno;
            while !is_end {
                let Some((ln, raw)) = self.take_line() else {
                    break;
                };
                let (text, _) = self.process_line(raw, false, ln)?;
                end_line = ln;
                if is_comment(raw) || text.trim_start().is_empty() {
                    continue;
                }
                let (c, e) = trim_continuation(text, escape);
                logical.push(c, ln, 1);
                is_end = e;
            }

            let node = split_command(&logical.text, 0);
            let ctx = Ctx {
                file: self.file,
                logical: &logical,
                escape,
            };
            let mut heredocs = Vec::new();
            if can_contain_heredoc(&node) {
                let heads =
                    heredocs_from_line(&logical.text).map_err(|k| ctx.err(node.kw_off, k))?;
                for (head, off) in heads {
                    let mut content = String::new();
                    let mut terminated = false;
                    while let Some((ln, raw)) = self.take_line() {
                        end_line = ln;
                        let mut candidate = trim_newline(raw);
                        if head.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == head.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(raw);
                    }
                    if !terminated {
                        return Err(ctx.err(off, ParseErrorKind::UnterminatedHeredoc(head.name)));
                    }
                    heredocs.push(ReadHeredoc {
                        heredoc: Heredoc {
                            name: head.name,
                            content,
                            expand: head.expand,
                            chomp_tabs: head.chomp,
                            fd: head.fd,
                        },
                    });
                }
            }

            any_instruction = true;
            let parsed = instructions::build(&node, &heredocs, &logical.text, &ctx)?;
            let (_, column) = logical.pos(node.kw_off);
            let span = Span {
                line: start_line,
                column,
                end_line,
            };
            match parsed {
                Parsed::From(from) => {
                    if let Some(name) = &from.name
                        && !stage_names.insert(name.clone())
                    {
                        return Err(ctx.err(
                            from.name_off,
                            ParseErrorKind::DuplicateStageName(name.clone()),
                        ));
                    }
                    stages.push(Stage {
                        index: stages.len(),
                        name: from.name,
                        base: from.base,
                        platform: from.platform,
                        instructions: Vec::new(),
                        line: start_line,
                    });
                }
                Parsed::Instr(instr) => match stages.last_mut() {
                    Some(stage) => stage.instructions.push(Spanned { span, node: instr }),
                    None => match instr {
                        Instruction::Arg(args) => global_args.extend(args),
                        other => {
                            return Err(ctx.err(
                                node.kw_off,
                                ParseErrorKind::BeforeFirstFrom(other.keyword().to_owned()),
                            ));
                        }
                    },
                },
            }
        }
        let last = self.lines.len().max(1);
        if !any_instruction {
            return Err(self.error(last, 1, ParseErrorKind::NoInstructions));
        }
        if stages.is_empty() {
            return Err(self.error(last, 1, ParseErrorKind::NoStages));
        }
        Ok(Dockerfile {
            directives: self.directives,
            global_args,
            stages,
        })
    }
}

/// Matches `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (RE2 `\s`), returning key and value.
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start_matches(is_re_space);
    let key_len = rest
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_alphanumeric() && (*i > 0 || c.is_ascii_alphabetic())))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if key_len == 0 {
        return None;
    }
    let key = &rest[..key_len];
    let rest = rest[key_len..].trim_start_matches(is_re_space);
    let rest = rest.strip_prefix('=')?;
    if rest.contains('\n') || rest.is_empty() {
        return None;
    }
    let value = rest.trim_matches(is_re_space);
    if value.is_empty() {
        // `(.+?)` must take one character: the last whitespace one.
        let last = rest.char_indices().last()?.0;
        return Some((key, &rest[last..]));
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_regex_semantics() {
        assert_eq!(trim_continuation("RUN a \\", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\  \t", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("RUN a \\\\", '\\'), ("RUN a \\\\", true));
        assert_eq!(trim_continuation("RUN a `", '`'), ("RUN a ", false));
        assert_eq!(trim_continuation("COPY a c:\\", '`'), ("COPY a c:\\", true));
    }

    #[test]
    fn directive_regex() {
        assert_eq!(match_directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(match_directive("#escape =  \\ "), Some(("escape", "\\")));
        assert_eq!(
            match_directive("# syntax=docker/dockerfile:1"),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("# not a directive"), None);
        assert_eq!(match_directive("# 1x=y"), None);
        assert_eq!(match_directive("# escape="), None);
    }

    #[test]
    fn builder_flags() {
        let (off, flags) = extract_builder_flags("--from=a --chown=\"x y\" src dst");
        assert_eq!(
            flags,
            vec![("--from=a".to_owned(), 0), ("--chown=x y".to_owned(), 9)]
        );
        assert_eq!(off, 23);
        let (off, flags) = extract_builder_flags("--link -- --notflag x");
        assert_eq!(flags, vec![("--link".to_owned(), 0)]);
        assert_eq!(&"--link -- --notflag x"[off..], " --notflag x");
    }

    #[test]
    fn words_keep_quotes() {
        let w: Vec<String> = parse_words("a=\"b c\" d='e f' g\\ h", 0, '\\')
            .into_iter()
            .map(|t| t.text)
            .collect();
        assert_eq!(w, ["a=\"b c\"", "d='e f'", "g\\ h"]);
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc_word("<<EOF").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.expand, h.chomp, h.fd),
            ("EOF", true, false, None)
        );
        let h = parse_heredoc_word("<<-\"EOF\"").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", false, true));
        let h = parse_heredoc_word("3<<'E'OF").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.fd), ("EOF", false, Some(3)));
        assert!(parse_heredoc_word("<<").unwrap().is_none());
        assert!(parse_heredoc_word("a<<EOF").unwrap().is_none());
        assert!(parse_heredoc_word("<<<EOF").unwrap().is_none());
    }
}
