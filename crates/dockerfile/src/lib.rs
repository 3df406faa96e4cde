//! Dockerfile parsing, variable expansion and `.dockerignore` matching with Docker's semantics.
//!
//! - [`parse`]: Dockerfile text to a typed [`Dockerfile`] (directives, global ARGs, stages),
//!   following BuildKit's parser: `# syntax=` / `# escape=` directives, line continuations,
//!   heredocs, JSON (exec) forms, every instruction and its flags. Errors carry file, line
//!   and column.
//! - [`expand`] / [`expand_words`]: BuildKit's shell-lexer variable expansion
//!   (`${v:-w}`, `${v#pat}`, `${v//pat/rep}`, quotes, escapes).
//! - [`platform_args`], [`PROXY_ARGS`]: predefined build arguments.
//! - [`DockerIgnore`], [`find_ignore_file`]: `.dockerignore` with moby's patternmatcher rules.
//! - [`match_sources`], [`resolve_sources`]: COPY/ADD wildcards with Go `filepath.Match`.
//!
//! Values in the tree are unexpanded; the builder expands them with the variables in scope.
//!
//! ```
//! use dockerfile::{Instruction, expand, parse};
//!
//! let src = "ARG BASE=alpine:3.19\nFROM ${BASE} AS app\nENV GREETING=\"hello world\"\n";
//! let df = parse(src, "Dockerfile").unwrap();
//! let stage = &df.stages[0];
//! assert_eq!(stage.name.as_deref(), Some("app"));
//! let args = |name: &str| (name == "BASE").then(|| "alpine:3.19".to_owned());
//! assert_eq!(expand(&stage.base, &args, df.escape()).unwrap(), "alpine:3.19");
//! let Instruction::Env(env) = &stage.instructions[0].node else { unreachable!() };
//! assert_eq!(env[0].value, "\"hello world\"");
//! assert_eq!(expand(&env[0].value, &|_| None, df.escape()).unwrap(), "hello world");
//! ```

#![deny(missing_docs)]

mod args;
mod ast;
mod dockerignore;
mod duration;
mod error;
mod expand;
mod instructions;
mod mount;
mod parser;
mod sources;

pub use args::{PLATFORM_ARGS, PROXY_ARGS, Platform, PlatformError, is_proxy_arg, platform_args};
pub use ast::{
    Add, Arg, Chmod, CommandLine, Copy, Directives, Dockerfile, Healthcheck, Heredoc, Instruction,
    KeyValue, Mount, MountType, NetworkMode, Onbuild, PortError, PortSpec, Protocol, Run,
    SecurityMode, Sharing, Span, Spanned, Stage,
};
pub use dockerignore::{
    DockerIgnore, DockerIgnoreError, DockerIgnoreErrorKind, IgnorePattern, find_ignore_file,
};
pub use error::{ParseError, ParseErrorKind};
pub use expand::{
    ExpandError, ExpandErrorKind, Expansion, Lookup, expand, expand_detailed, expand_words,
};
pub use go_filepath::{PatternError, clean_path, glob_match, has_wildcards};
pub use mount::MountError;
pub use parser::parse;
pub use sources::{SourceError, clean_source, match_sources, resolve_sources};

/// Instructions whose arguments the builder expands, per the Dockerfile reference
/// (ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME WORKDIR, plus ARG defaults).
pub const EXPANDING_INSTRUCTIONS: [&str; 11] = [
    "ADD",
    "ARG",
    "COPY",
    "ENV",
    "EXPOSE",
    "FROM",
    "LABEL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Whether the builder expands variables in the arguments of the instruction `keyword`
/// (case-insensitive).
///
/// RUN, CMD, ENTRYPOINT, SHELL and HEALTHCHECK are not expanded by the builder (a shell
/// in the container may expand them); RUN's `--mount` options are. ONBUILD is expanded
/// only when its trigger runs in a child build.
pub fn keyword_expands_variables(keyword: &str) -> bool {
    EXPANDING_INSTRUCTIONS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(keyword))
}
