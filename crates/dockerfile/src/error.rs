//! Parse errors with file, line and column.

use thiserror::Error;

use crate::ast::PortError;
use crate::mount::MountError;

/// A Dockerfile that does not parse: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file}:{line}:{column}: {kind}")]
pub struct ParseError {
    /// The file name given to [`crate::parse`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// The reasons a Dockerfile is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// No instruction at all (only comments and blank lines).
    #[error("file with no instructions")]
    NoInstructions,
    /// Instructions but no FROM.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `# escape=` with something other than `\` or `` ` ``.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    /// The same directive twice.
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    /// An instruction keyword that does not exist.
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    /// A `--flag` the instruction does not take.
    #[error("unknown flag: --{0}")]
    UnknownFlag(String),
    /// A non-repeatable flag given twice.
    #[error("duplicate flag specified: --{0}")]
    DuplicateFlag(String),
    /// `--flag` without `=value` where a value is needed.
    #[error("missing a value on flag: --{0}")]
    MissingFlagValue(String),
    /// A boolean flag with a value other than true/false.
    #[error("expecting boolean value for flag --{flag}, not: {value}")]
    InvalidBoolFlag {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
    },
    /// An instruction without its arguments.
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(&'static str),
    /// An instruction that takes one argument, given none.
    #[error("{0} requires exactly one argument")]
    ExactlyOneArgument(&'static str),
    /// COPY/ADD with a single argument.
    #[error(
        "{0} requires at least two arguments, but only one was provided. Destination could not be determined"
    )]
    NoDestination(&'static str),
    /// FROM with two or more than three words, or three without `AS`.
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// A stage name not matching `^[a-z][a-z0-9-_.]*$`.
    #[error(
        "invalid name for build stage: {0:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName(String),
    /// Two stages with the same name.
    #[error("duplicate stage name {0:?}")]
    DuplicateStageName(String),
    /// An instruction other than ARG before the first FROM.
    #[error("{0} instruction before the first FROM: only ARG may precede FROM")]
    BeforeFirstFrom(String),
    /// A JSON array with something other than strings.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStrings,
    /// SHELL in shell form.
    #[error("{0} requires the arguments to be in JSON form")]
    NotJson(&'static str),
    /// `ENV =value`, `ARG =x`.
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    /// `ENV a=1 b` (modern form without `=` in a word).
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
    /// Legacy `ENV key` without a value.
    #[error("{0} must have two arguments")]
    TwoArguments(&'static str),
    /// `ONBUILD ONBUILD`.
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChained,
    /// `ONBUILD FROM` or `ONBUILD MAINTAINER`.
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    /// `HEALTHCHECK NONE` with more words or options.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// `HEALTHCHECK` with a type other than NONE or CMD.
    #[error("Unknown type {0:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType(String),
    /// `HEALTHCHECK CMD` without a command.
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// A HEALTHCHECK duration that does not parse.
    #[error("invalid duration {value:?} for --{flag}")]
    InvalidDuration {
        /// The flag.
        flag: String,
        /// The value.
        value: String,
    },
    /// A HEALTHCHECK duration below 1ms (0 is allowed: inherit).
    #[error("Interval {0:?} cannot be less than 1ms")]
    DurationTooShort(String),
    /// `--retries` not a non-negative 32-bit integer.
    #[error("invalid --retries value {0:?}: must be a non-negative integer")]
    InvalidRetries(String),
    /// `--chmod` not an octal mode up to 07777.
    #[error("invalid --chmod value {0:?}: must be an octal mode such as 0755")]
    InvalidChmod(String),
    /// A heredoc as COPY/ADD destination.
    #[error("{0} cannot accept a heredoc as a destination")]
    HeredocDestination(&'static str),
    /// A heredoc without its terminating line.
    #[error("unterminated heredoc {0:?}")]
    UnterminatedHeredoc(String),
    /// A heredoc delimiter the shell lexer rejects.
    #[error("invalid heredoc delimiter: {0}")]
    InvalidHeredoc(String),
    /// An invalid `RUN --mount`.
    #[error("invalid --mount: {0}")]
    Mount(MountError),
    /// `--network` not default, none or host.
    #[error("unsupported network mode {0:?}")]
    InvalidNetwork(String),
    /// `--security` not sandbox or insecure.
    #[error("unsupported security mode {0:?}")]
    InvalidSecurity(String),
    /// An EXPOSE port that is not a port, range or protocol.
    #[error("EXPOSE: {0}")]
    InvalidPort(PortError),
    /// `VOLUME ""`.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
}
