//! The typed syntax tree of a Dockerfile.
//!
//! Values are kept as written (unexpanded, quotes included) wherever the builder expands
//! variables later: call [`crate::expand`] / [`crate::expand_words`] with the variables in
//! scope at that instruction. Lines and columns are 1-based; columns count characters.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A parsed Dockerfile: directives, the ARGs before the first FROM, and the stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dockerfile {
    /// Parser directives from the top of the file.
    pub directives: Directives,
    /// ARG instructions before the first FROM, in order (usable in FROM lines).
    pub global_args: Vec<Arg>,
    /// Build stages in order; at least one.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The escape character in force (`\` unless `# escape=` says otherwise).
    pub fn escape(&self) -> char {
        self.directives.escape
    }

    /// The stage named `name` (case-insensitive), or with that index when `name` is a number.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| name.parse::<usize>().ok().and_then(|i| self.stages.get(i)))
    }
}

/// Parser directives (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directives {
    /// `# syntax=` frontend image reference, if any.
    pub syntax: Option<String>,
    /// The escape and line-continuation character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` lint configuration, if any, unparsed.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// One build stage: a FROM line and the instructions after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Position among the stages, from 0.
    pub index: usize,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The base image reference or stage name, unexpanded.
    pub base: String,
    /// `--platform` value, unexpanded.
    pub platform: Option<String>,
    /// The instructions of the stage, FROM excluded.
    pub instructions: Vec<Spanned<Instruction>>,
    /// Line of the FROM instruction.
    pub line: usize,
}

/// Where an instruction is in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First line (the keyword's).
    pub line: usize,
    /// Column of the keyword on that line.
    pub column: usize,
    /// Last line, continuation and heredoc lines included.
    pub end_line: usize,
}

/// A node with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spanned<T> {
    /// Where it is.
    pub span: Span,
    /// What it is.
    pub node: T,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.node
    }
}

/// An instruction inside a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instruction {
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `SHELL ["executable", "parameters"]`.
    Shell(Vec<String>),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Add),
    /// `ARG name[=default] ...`.
    Arg(Vec<Arg>),
    /// `ENV key=value ...` (or legacy `ENV key value`).
    Env(Vec<KeyValue>),
    /// `LABEL key=value ...`.
    Label(Vec<KeyValue>),
    /// `WORKDIR path` (unexpanded).
    Workdir(String),
    /// `USER user[:group]` (unexpanded).
    User(String),
    /// `EXPOSE port[/proto] ...` words, unexpanded; see [`PortSpec::parse`].
    Expose(Vec<String>),
    /// `VOLUME` paths, unexpanded.
    Volume(Vec<String>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD <instruction>`.
    Onbuild(Onbuild),
    /// `STOPSIGNAL signal` (unexpanded).
    StopSignal(String),
    /// `MAINTAINER name` (deprecated).
    Maintainer(String),
}

impl Instruction {
    /// The instruction keyword in upper case, e.g. `"RUN"`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Arg(_) => "ARG",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Whether the builder expands variables in this instruction's arguments.
    ///
    /// ONBUILD is not expanded when declared (its trigger is, when it runs).
    pub fn expands_variables(&self) -> bool {
        crate::keyword_expands_variables(self.keyword())
    }
}

/// A command in shell form (run with the SHELL) or exec form (JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandLine {
    /// Shell form: the text, passed to the shell unexpanded.
    Shell(String),
    /// Exec form: the argv.
    Exec(Vec<String>),
}

/// A heredoc (`<<EOF` ... `EOF`) attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (for COPY/ADD, the file name).
    pub name: String,
    /// The body, every line with its line ending; leading tabs already removed for `<<-`.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no expansion.
    pub expand: bool,
    /// Whether this was `<<-` (leading tabs stripped from body and delimiter line).
    pub chomp_tabs: bool,
    /// The file descriptor before `<<` (`3<<EOF`), if any.
    pub fd: Option<u32>,
}

/// `RUN` with its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// `--mount` options, in order.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
    /// Heredocs on the line, in order.
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --network` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// `default`: the build's default network.
    Default,
    /// `none`: no network.
    None,
    /// `host`: the host's network (needs an entitlement).
    Host,
}

/// `RUN --security` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityMode {
    /// `sandbox`: the default.
    Sandbox,
    /// `insecure`: privileged (needs an entitlement).
    Insecure,
}

/// `RUN --mount` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountType {
    /// `bind` (default): a directory of the context or of another stage/image.
    Bind,
    /// `cache`: a persistent cache directory.
    Cache,
    /// `tmpfs`: a tmpfs.
    Tmpfs,
    /// `secret`: a build secret file (or environment variable).
    Secret,
    /// `ssh`: an SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name used in Dockerfiles.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Cache mount sharing modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sharing {
    /// `shared` (default): concurrent writers.
    Shared,
    /// `private`: a new cache when busy.
    Private,
    /// `locked`: wait for the other writer.
    Locked,
}

/// One `RUN --mount=...` option.
///
/// String fields are raw (they may hold `$VAR`s the builder expands). When a typed field
/// (`type`, `sharing`, `mode`, `uid`, `gid`, `size`, `ro`, `required`) holds a variable,
/// `needs_expansion` is set and that field is left at its default: re-parse `spec` with
/// [`Mount::parse_expanded`] once build arguments are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The option text after `--mount=`, quotes removed.
    pub spec: String,
    /// `type`.
    pub kind: MountType,
    /// `target` / `dst` / `destination`.
    pub target: Option<String>,
    /// `source` / `src`.
    pub source: Option<String>,
    /// `from`: stage or image for bind/cache mounts.
    pub from: Option<String>,
    /// `id` (cache id, secret id, ssh id).
    pub id: Option<String>,
    /// `sharing` for cache mounts.
    pub sharing: Option<Sharing>,
    /// `mode` (octal) for cache, secret and ssh mounts.
    pub mode: Option<u32>,
    /// `uid`.
    pub uid: Option<u32>,
    /// `gid`.
    pub gid: Option<u32>,
    /// Read-only: given by `ro`/`readonly`/`rw`, else true for bind/secret/ssh.
    pub readonly: bool,
    /// `required` for secret and ssh mounts.
    pub required: bool,
    /// `size` in bytes for tmpfs mounts.
    pub size: Option<u64>,
    /// `env` for secret mounts: expose the secret as this environment variable.
    pub env: Option<String>,
    /// Some typed field holds a variable; see the type's documentation.
    pub needs_expansion: bool,
}

/// `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chmod {
    /// The value as written.
    pub raw: String,
    /// The octal mode, or `None` when `raw` holds variables to expand first.
    pub mode: Option<u32>,
}

/// `COPY` with its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// Source paths or patterns (heredoc sources excluded), unexpanded.
    pub sources: Vec<String>,
    /// Destination, unexpanded.
    pub dest: String,
    /// Heredoc sources: inline files named after their delimiter.
    pub heredocs: Vec<Heredoc>,
    /// `--from`: stage name, index or image.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// Whether the arguments were in JSON form.
    pub json: bool,
}

/// `ADD` with its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    /// Sources (paths, URLs, git refs; heredoc sources excluded), unexpanded.
    pub sources: Vec<String>,
    /// Destination, unexpanded.
    pub dest: String,
    /// Heredoc sources: inline files named after their delimiter.
    pub heredocs: Vec<Heredoc>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// `--checksum` (e.g. `sha256:...`).
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// Whether the arguments were in JSON form.
    pub json: bool,
}

/// One ARG declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arg {
    /// The name, as written.
    pub name: String,
    /// The default value, unexpanded (quotes included), if any.
    pub default: Option<String>,
    /// Line of the ARG instruction.
    pub line: usize,
}

/// One `key=value` of ENV or LABEL; both unexpanded (quotes included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [options] CMD command`.
    Cmd {
        /// The command (shell form becomes `CMD-SHELL` in the image config).
        command: CommandLine,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// `ONBUILD <instruction>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onbuild {
    /// The trigger's text as stored in the image config (heredoc bodies appended).
    pub expression: String,
    /// The trigger, parsed.
    pub instruction: Box<Instruction>,
}

/// A port of EXPOSE: a port or range with its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// First port.
    pub start: u16,
    /// Last port (equal to `start` for a single port).
    pub end: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// Transport protocols of EXPOSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// `tcp` (default).
    Tcp,
    /// `udp`.
    Udp,
    /// `sctp`.
    Sctp,
}

impl Protocol {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// An invalid EXPOSE port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Not a number or range in 0..=65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// Not tcp, udp or sctp.
    #[error("invalid proto {0:?}")]
    InvalidProto(String),
}

impl PortSpec {
    /// Parses `80`, `80/udp`, `8000-8010/tcp` (protocol case-insensitive, default tcp).
    pub fn parse(s: &str) -> Result<PortSpec, PortError> {
        let (port, proto) = match s.split_once('/') {
            Some((p, pr)) => (p, pr),
            None => (s, "tcp"),
        };
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => return Err(PortError::InvalidProto(proto.to_owned())),
        };
        let bad = || PortError::InvalidPort(port.to_owned());
        let num = |p: &str| -> Result<u16, PortError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u16>().map_err(|_| bad())
        };
        let (start, end) = match port.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let p = num(port)?;
                (p, p)
            }
        };
        if end < start {
            return Err(bad());
        }
        Ok(PortSpec {
            start,
            end,
            protocol,
        })
    }

    /// Ports as image-config keys: `"80/tcp"`, one per port of a range.
    pub fn config_keys(&self) -> Vec<String> {
        (self.start..=self.end)
            .map(|p| format!("{p}/{}", self.protocol.as_str()))
            .collect()
    }
}
