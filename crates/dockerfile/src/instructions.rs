//! From split nodes to typed instructions (BuildKit's `instructions/parse.go` and `bflag.go`).

use std::collections::HashMap;
use std::time::Duration;

use crate::ast::{
    Add, Arg, Chmod, CommandLine, Copy, Healthcheck, Heredoc, Instruction, KeyValue, Mount,
    NetworkMode, Onbuild, PortSpec, Run, SecurityMode,
};
use crate::duration::parse_go_duration;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::parser::{
    Ctx, RawNode, ReadHeredoc, Tok, chomp_heredoc, parse_heredoc_word, parse_json, parse_words,
    split_command, split_ws,
};

/// A built node: a stage start or an instruction.
pub(crate) enum Parsed {
    From(FromLine),
    Instr(Instruction),
}

/// The parts of a FROM line.
pub(crate) struct FromLine {
    pub base: String,
    pub name: Option<String>,
    pub name_off: usize,
    pub platform: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    Str,
    Strs,
}

enum FlagVal {
    Bool(bool),
    Str(String, usize),
    Strs(Vec<(String, usize)>),
}

/// Parsed `--flags` of one instruction (BuildKit's `BFlags.Parse`).
struct Flags {
    vals: HashMap<&'static str, FlagVal>,
}

impl Flags {
    fn parse(
        node: &RawNode,
        specs: &[(&'static str, FlagKind)],
        ctx: &Ctx<'_>,
    ) -> Result<Flags, ParseError> {
        let mut vals: HashMap<&'static str, FlagVal> = HashMap::new();
        for tok in &node.flags {
            let arg = tok.text.strip_prefix("--").unwrap_or(&tok.text);
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            let Some(&(key, kind)) = specs.iter().find(|(n, _)| *n == name) else {
                return Err(ctx.err(tok.off, K::UnknownFlag(name.to_owned())));
            };
            if kind != FlagKind::Strs && vals.contains_key(key) {
                return Err(ctx.err(tok.off, K::DuplicateFlag(name.to_owned())));
            }
            match kind {
                FlagKind::Bool => {
                    let v = match value {
                        None => true,
                        Some("") => {
                            return Err(ctx.err(tok.off, K::MissingFlagValue(name.to_owned())));
                        }
                        Some(v) => match v.to_ascii_lowercase().as_str() {
                            "true" => true,
                            "false" => false,
                            _ => {
                                return Err(ctx.err(
                                    tok.off,
                                    K::InvalidBoolFlag {
                                        flag: name.to_owned(),
                                        value: v.to_owned(),
                                    },
                                ));
                            }
                        },
                    };
                    vals.insert(key, FlagVal::Bool(v));
                }
                FlagKind::Str => {
                    let Some(v) = value else {
                        return Err(ctx.err(tok.off, K::MissingFlagValue(name.to_owned())));
                    };
                    vals.insert(key, FlagVal::Str(v.to_owned(), tok.off));
                }
                FlagKind::Strs => {
                    let Some(v) = value else {
                        return Err(ctx.err(tok.off, K::MissingFlagValue(name.to_owned())));
                    };
                    if let FlagVal::Strs(list) =
                        vals.entry(key).or_insert_with(|| FlagVal::Strs(Vec::new()))
                    {
                        list.push((v.to_owned(), tok.off));
                    }
                }
            }
        }
        Ok(Flags { vals })
    }

    fn bool(&self, name: &str) -> bool {
        matches!(self.vals.get(name), Some(FlagVal::Bool(true)))
    }

    fn string(&self, name: &str) -> Option<(String, usize)> {
        match self.vals.get(name) {
            Some(FlagVal::Str(s, off)) => Some((s.clone(), *off)),
            _ => None,
        }
    }

    fn strings(&self, name: &str) -> Vec<(String, usize)> {
        match self.vals.get(name) {
            Some(FlagVal::Strs(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

fn no_flags(node: &RawNode, ctx: &Ctx<'_>) -> Result<(), ParseError> {
    Flags::parse(node, &[], ctx).map(|_| ())
}

/// Shell or exec form (BuildKit's `parseMaybeJSON`); `None` when there are no arguments.
fn maybe_json(node: &RawNode, ctx: &Ctx<'_>) -> Result<Option<CommandLine>, ParseError> {
    maybe_json_str(&node.args, node.args_off, ctx)
}

fn maybe_json_str(
    args: &str,
    off: usize,
    ctx: &Ctx<'_>,
) -> Result<Option<CommandLine>, ParseError> {
    if args.is_empty() {
        return Ok(None);
    }
    match parse_json(args).map_err(|k| ctx.err(off, k))? {
        Some(v) => Ok(Some(CommandLine::Exec(v))),
        None => Ok(Some(CommandLine::Shell(args.to_owned()))),
    }
}

/// JSON array or whitespace-separated words (BuildKit's `parseMaybeJSONToList`).
fn json_or_words(node: &RawNode, ctx: &Ctx<'_>) -> Result<(Vec<Tok>, bool), ParseError> {
    match parse_json(&node.args).map_err(|k| ctx.err(node.args_off, k))? {
        Some(v) => Ok((
            v.into_iter()
                .map(|text| Tok {
                    text,
                    off: node.args_off,
                })
                .collect(),
            true,
        )),
        None => Ok((split_ws(&node.args, node.args_off), false)),
    }
}

/// Builds the instruction of a split node with the heredocs read after it.
pub(crate) fn build(
    node: &RawNode,
    heredocs: &[ReadHeredoc],
    original: &str,
    ctx: &Ctx<'_>,
) -> Result<Parsed, ParseError> {
    let kw = node.keyword.to_ascii_lowercase();
    let instr = match kw.as_str() {
        "from" => return build_from(node, ctx).map(Parsed::From),
        "run" => build_run(node, heredocs, ctx)?,
        "cmd" => {
            no_flags(node, ctx)?;
            let c = maybe_json(node, ctx)?
                .ok_or_else(|| ctx.err(node.kw_off, K::AtLeastOneArgument("CMD")))?;
            Instruction::Cmd(c)
        }
        "entrypoint" => {
            no_flags(node, ctx)?;
            let c = maybe_json(node, ctx)?
                .ok_or_else(|| ctx.err(node.kw_off, K::AtLeastOneArgument("ENTRYPOINT")))?;
            Instruction::Entrypoint(c)
        }
        "shell" => {
            no_flags(node, ctx)?;
            match maybe_json(node, ctx)? {
                None => return Err(ctx.err(node.kw_off, K::AtLeastOneArgument("SHELL"))),
                Some(CommandLine::Shell(_)) => {
                    return Err(ctx.err(node.args_off, K::NotJson("SHELL")));
                }
                Some(CommandLine::Exec(v)) if v.is_empty() => {
                    return Err(ctx.err(node.args_off, K::AtLeastOneArgument("SHELL")));
                }
                Some(CommandLine::Exec(v)) => Instruction::Shell(v),
            }
        }
        "copy" => build_copy(node, heredocs, ctx)?,
        "add" => build_add(node, heredocs, ctx)?,
        "arg" => {
            no_flags(node, ctx)?;
            let words = parse_words(&node.args, node.args_off, ctx.escape);
            if words.is_empty() {
                return Err(ctx.err(node.kw_off, K::AtLeastOneArgument("ARG")));
            }
            let line = ctx.logical.pos(node.kw_off).0;
            let mut args = Vec::new();
            for w in words {
                let (name, default) = match w.text.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (w.text.clone(), None),
                };
                if name.is_empty() {
                    return Err(ctx.err(w.off, K::BlankName("ARG")));
                }
                args.push(Arg {
                    name,
                    default,
                    line,
                });
            }
            Instruction::Arg(args)
        }
        "env" => {
            no_flags(node, ctx)?;
            Instruction::Env(name_values(node, "ENV", ctx)?)
        }
        "label" => {
            no_flags(node, ctx)?;
            Instruction::Label(name_values(node, "LABEL", ctx)?)
        }
        "workdir" => Instruction::Workdir(single(node, "WORKDIR", ctx)?),
        "user" => Instruction::User(single(node, "USER", ctx)?),
        "stopsignal" => Instruction::StopSignal(single(node, "STOPSIGNAL", ctx)?),
        "maintainer" => Instruction::Maintainer(single(node, "MAINTAINER", ctx)?),
        "expose" => {
            no_flags(node, ctx)?;
            let ports = split_ws(&node.args, node.args_off);
            if ports.is_empty() {
                return Err(ctx.err(node.kw_off, K::AtLeastOneArgument("EXPOSE")));
            }
            for p in &ports {
                if !p.text.contains('$') {
                    PortSpec::parse(&p.text).map_err(|e| ctx.err(p.off, K::InvalidPort(e)))?;
                }
            }
            Instruction::Expose(ports.into_iter().map(|t| t.text).collect())
        }
        "volume" => {
            no_flags(node, ctx)?;
            let (words, _) = json_or_words(node, ctx)?;
            if words.is_empty() {
                return Err(ctx.err(node.kw_off, K::AtLeastOneArgument("VOLUME")));
            }
            let mut vols = Vec::new();
            for w in words {
                let v = w.text.trim();
                if v.is_empty() {
                    return Err(ctx.err(w.off, K::EmptyVolume));
                }
                vols.push(v.to_owned());
            }
            Instruction::Volume(vols)
        }
        "healthcheck" => Instruction::Healthcheck(build_healthcheck(node, ctx)?),
        "onbuild" => build_onbuild(node, heredocs, original, ctx)?,
        _ => return Err(ctx.err(node.kw_off, K::UnknownInstruction(node.keyword.clone()))),
    };
    Ok(Parsed::Instr(instr))
}

fn single(node: &RawNode, name: &'static str, ctx: &Ctx<'_>) -> Result<String, ParseError> {
    if node.args.is_empty() {
        return Err(ctx.err(node.kw_off, K::ExactlyOneArgument(name)));
    }
    no_flags(node, ctx)?;
    Ok(node.args.clone())
}

fn valid_stage_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn build_from(node: &RawNode, ctx: &Ctx<'_>) -> Result<FromLine, ParseError> {
    let args = split_ws(&node.args, node.args_off);
    let mut name = None;
    let mut name_off = node.kw_off;
    match args.len() {
        3 if args[1].text.eq_ignore_ascii_case("as") => {
            let lower = args[2].text.to_lowercase();
            if !valid_stage_name(&lower) {
                return Err(ctx.err(args[2].off, K::InvalidStageName(args[2].text.clone())));
            }
            name = Some(lower);
            name_off = args[2].off;
        }
        1 => {}
        _ => {
            let off = args.get(1).map(|t| t.off).unwrap_or(node.kw_off);
            return Err(ctx.err(off, K::FromArguments));
        }
    }
    let flags = Flags::parse(node, &[("platform", FlagKind::Str)], ctx)?;
    Ok(FromLine {
        base: args[0].text.clone(),
        name,
        name_off,
        platform: flags.string("platform").map(|(s, _)| s),
    })
}

fn chomped(h: &Heredoc) -> Heredoc {
    let mut h = h.clone();
    if h.chomp_tabs {
        h.content = chomp_heredoc(&h.content);
    }
    h
}

fn build_run(
    node: &RawNode,
    heredocs: &[ReadHeredoc],
    ctx: &Ctx<'_>,
) -> Result<Instruction, ParseError> {
    let flags = Flags::parse(
        node,
        &[
            ("mount", FlagKind::Strs),
            ("network", FlagKind::Str),
            ("security", FlagKind::Str),
        ],
        ctx,
    )?;
    let command =
        maybe_json(node, ctx)?.ok_or_else(|| ctx.err(node.kw_off, K::AtLeastOneArgument("RUN")))?;
    let mut mounts = Vec::new();
    for (spec, off) in flags.strings("mount") {
        mounts.push(Mount::parse(&spec).map_err(|e| ctx.err(off, K::Mount(e)))?);
    }
    let network = match flags.string("network") {
        None => None,
        Some((v, off)) => Some(match v.as_str() {
            "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            _ => return Err(ctx.err(off, K::InvalidNetwork(v))),
        }),
    };
    let security = match flags.string("security") {
        None => None,
        Some((v, off)) => Some(match v.as_str() {
            "sandbox" => SecurityMode::Sandbox,
            "insecure" => SecurityMode::Insecure,
            _ => return Err(ctx.err(off, K::InvalidSecurity(v))),
        }),
    };
    Ok(Instruction::Run(Run {
        command,
        mounts,
        network,
        security,
        heredocs: heredocs.iter().map(|h| chomped(&h.heredoc)).collect(),
    }))
}

fn chmod(flags: &Flags, ctx: &Ctx<'_>) -> Result<Option<Chmod>, ParseError> {
    let Some((raw, off)) = flags.string("chmod") else {
        return Ok(None);
    };
    if raw.contains('$') {
        return Ok(Some(Chmod { raw, mode: None }));
    }
    let valid =
        !raw.is_empty() && raw.len() <= 5 && raw.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(&raw, 8) {
        Ok(mode) if valid && mode <= 0o7777 => Ok(Some(Chmod {
            raw,
            mode: Some(mode),
        })),
        _ => Err(ctx.err(off, K::InvalidChmod(raw))),
    }
}

struct Sources {
    sources: Vec<String>,
    dest: String,
    heredocs: Vec<Heredoc>,
    json: bool,
}

fn sources_and_dest(
    node: &RawNode,
    heredocs: &[ReadHeredoc],
    name: &'static str,
    ctx: &Ctx<'_>,
) -> Result<Sources, ParseError> {
    let (words, json) = json_or_words(node, ctx)?;
    let (Some((dest, srcs)), true) = (words.split_last(), words.len() >= 2) else {
        return Err(ctx.err(node.kw_off, K::NoDestination(name)));
    };
    if matches!(parse_heredoc_word(&dest.text), Ok(Some(_))) {
        return Err(ctx.err(dest.off, K::HeredocDestination(name)));
    }
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for src in srcs {
        match parse_heredoc_word(&src.text) {
            Ok(Some(head)) => {
                let found = heredocs.iter().rev().find(|h| h.heredoc.name == head.name);
                let mut content = found.map(|h| h.heredoc.content.clone()).unwrap_or_default();
                if head.chomp {
                    content = chomp_heredoc(&content);
                }
                inline.push(Heredoc {
                    name: head.name,
                    content,
                    expand: head.expand,
                    chomp_tabs: head.chomp,
                    fd: head.fd,
                });
            }
            _ => sources.push(src.text.clone()),
        }
    }
    Ok(Sources {
        sources,
        dest: dest.text.clone(),
        heredocs: inline,
        json,
    })
}

fn build_copy(
    node: &RawNode,
    heredocs: &[ReadHeredoc],
    ctx: &Ctx<'_>,
) -> Result<Instruction, ParseError> {
    let flags = Flags::parse(
        node,
        &[
            ("chown", FlagKind::Str),
            ("from", FlagKind::Str),
            ("chmod", FlagKind::Str),
            ("link", FlagKind::Bool),
            ("parents", FlagKind::Bool),
            ("exclude", FlagKind::Strs),
        ],
        ctx,
    )?;
    let s = sources_and_dest(node, heredocs, "COPY", ctx)?;
    Ok(Instruction::Copy(Copy {
        sources: s.sources,
        dest: s.dest,
        heredocs: s.heredocs,
        from: flags.string("from").map(|(v, _)| v),
        chown: flags.string("chown").map(|(v, _)| v),
        chmod: chmod(&flags, ctx)?,
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        excludes: flags
            .strings("exclude")
            .into_iter()
            .map(|(v, _)| v)
            .collect(),
        json: s.json,
    }))
}

fn build_add(
    node: &RawNode,
    heredocs: &[ReadHeredoc],
    ctx: &Ctx<'_>,
) -> Result<Instruction, ParseError> {
    let flags = Flags::parse(
        node,
        &[
            ("chown", FlagKind::Str),
            ("chmod", FlagKind::Str),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::Str),
            ("exclude", FlagKind::Strs),
        ],
        ctx,
    )?;
    let s = sources_and_dest(node, heredocs, "ADD", ctx)?;
    Ok(Instruction::Add(Add {
        sources: s.sources,
        dest: s.dest,
        heredocs: s.heredocs,
        chown: flags.string("chown").map(|(v, _)| v),
        chmod: chmod(&flags, ctx)?,
        link: flags.bool("link"),
        excludes: flags
            .strings("exclude")
            .into_iter()
            .map(|(v, _)| v)
            .collect(),
        checksum: flags.string("checksum").map(|(v, _)| v),
        keep_git_dir: flags.bool("keep-git-dir"),
        json: s.json,
    }))
}

/// ENV and LABEL: `k=v ...` or legacy `k v` (BuildKit's `parseNameVal`).
fn name_values(
    node: &RawNode,
    name: &'static str,
    ctx: &Ctx<'_>,
) -> Result<Vec<KeyValue>, ParseError> {
    let words = parse_words(&node.args, node.args_off, ctx.escape);
    if words.is_empty() {
        return Err(ctx.err(node.kw_off, K::AtLeastOneArgument(name)));
    }
    if !words[0].text.contains('=') {
        let parts = split_ws(&node.args, node.args_off);
        if parts.len() < 2 {
            return Err(ctx.err(node.args_off, K::TwoArguments(name)));
        }
        let value_start = parts[1].off - node.args_off;
        return Ok(vec![KeyValue {
            key: parts[0].text.clone(),
            value: node.args[value_start..].to_owned(),
        }]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.text.split_once('=') else {
            return Err(ctx.err(w.off, K::MissingEquals(w.text.clone())));
        };
        if k.is_empty() {
            return Err(ctx.err(w.off, K::BlankName(name)));
        }
        out.push(KeyValue {
            key: k.to_owned(),
            value: v.to_owned(),
        });
    }
    Ok(out)
}

fn duration_flag(flags: &Flags, name: &str, ctx: &Ctx<'_>) -> Result<Option<Duration>, ParseError> {
    let Some((v, off)) = flags.string(name) else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(None);
    }
    let nanos = parse_go_duration(&v).ok_or_else(|| {
        ctx.err(
            off,
            K::InvalidDuration {
                flag: name.to_owned(),
                value: v.clone(),
            },
        )
    })?;
    if nanos == 0 {
        return Ok(Some(Duration::ZERO));
    }
    if nanos < 1_000_000 {
        return Err(ctx.err(off, K::DurationTooShort(name.to_owned())));
    }
    let nanos =
        u64::try_from(nanos).map_err(|_| ctx.err(off, K::DurationTooShort(name.to_owned())))?;
    Ok(Some(Duration::from_nanos(nanos)))
}

fn build_healthcheck(node: &RawNode, ctx: &Ctx<'_>) -> Result<Healthcheck, ParseError> {
    let args = node.args.as_str();
    let sep = args.find(char::is_whitespace).unwrap_or(args.len());
    if sep == 0 {
        return Err(ctx.err(node.kw_off, K::AtLeastOneArgument("HEALTHCHECK")));
    }
    let next = args[sep..]
        .find(|c: char| !c.is_whitespace())
        .map(|i| sep + i)
        .unwrap_or(args.len());
    let typ = args[..sep].to_uppercase();
    let rest = &args[next..];
    let rest_off = node.args_off + next;
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(ctx.err(rest_off, K::HealthcheckNoneArguments));
        }
        if let Some(f) = node.flags.first() {
            return Err(ctx.err(f.off, K::HealthcheckNoneArguments));
        }
        return Ok(Healthcheck::None);
    }
    let flags = Flags::parse(
        node,
        &[
            ("interval", FlagKind::Str),
            ("timeout", FlagKind::Str),
            ("start-period", FlagKind::Str),
            ("start-interval", FlagKind::Str),
            ("retries", FlagKind::Str),
        ],
        ctx,
    )?;
    if typ != "CMD" {
        return Err(ctx.err(node.args_off, K::HealthcheckType(typ)));
    }
    let command = match maybe_json_str(rest, rest_off, ctx)? {
        None => return Err(ctx.err(node.args_off, K::HealthcheckMissingCommand)),
        Some(CommandLine::Exec(v)) if v.is_empty() => {
            return Err(ctx.err(rest_off, K::HealthcheckMissingCommand));
        }
        Some(c) => c,
    };
    let retries = match flags.string("retries") {
        None => None,
        Some((v, _)) if v.is_empty() => None,
        Some((v, off)) => {
            let n: i32 = v
                .parse()
                .map_err(|_| ctx.err(off, K::InvalidRetries(v.clone())))?;
            Some(u32::try_from(n).map_err(|_| ctx.err(off, K::InvalidRetries(v.clone())))?)
        }
    };
    Ok(Healthcheck::Cmd {
        command,
        interval: duration_flag(&flags, "interval", ctx)?,
        timeout: duration_flag(&flags, "timeout", ctx)?,
        start_period: duration_flag(&flags, "start-period", ctx)?,
        start_interval: duration_flag(&flags, "start-interval", ctx)?,
        retries,
    })
}

fn build_onbuild(
    node: &RawNode,
    heredocs: &[ReadHeredoc],
    original: &str,
    ctx: &Ctx<'_>,
) -> Result<Instruction, ParseError> {
    if node.args.is_empty() {
        return Err(ctx.err(node.kw_off, K::AtLeastOneArgument("ONBUILD")));
    }
    no_flags(node, ctx)?;
    let child = split_command(&node.args, node.args_off);
    let trigger = child.keyword.to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return Err(ctx.err(child.kw_off, K::OnbuildChained)),
        "MAINTAINER" | "FROM" => return Err(ctx.err(child.kw_off, K::OnbuildTrigger(trigger))),
        _ => {}
    }
    let instruction = match build(&child, heredocs, original, ctx)? {
        Parsed::Instr(i) => i,
        Parsed::From(_) => return Err(ctx.err(child.kw_off, K::OnbuildTrigger(trigger))),
    };
    // `(?i)^\s*ONBUILD\s*` removed from the original line, heredoc bodies appended.
    let t = original.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    let mut expression = match t.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => t[7..]
            .trim_start_matches(['\t', '\n', '\u{c}', '\r', ' '])
            .to_owned(),
        _ => original.to_owned(),
    };
    for h in heredocs {
        expression.push('\n');
        expression.push_str(&h.heredoc.content);
        expression.push_str(&h.heredoc.name);
    }
    Ok(Instruction::Onbuild(Onbuild {
        expression,
        instruction: Box::new(instruction),
    }))
}
