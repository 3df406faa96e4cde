//! Parser: directives, continuations, every instruction and flag, heredocs, errors with positions.

use std::time::Duration;

use dockerfile::{
    Add, Arg, CommandLine, Copy, Dockerfile, Healthcheck, Heredoc, Instruction, KeyValue,
    MountType, NetworkMode, ParseError, ParseErrorKind, PortSpec, Protocol, Run, SecurityMode,
    Sharing, expand, parse,
};

fn ok(src: &str) -> Dockerfile {
    match parse(src, "Dockerfile") {
        Ok(d) => d,
        Err(e) => panic!("{e}\n--- source ---\n{src}"),
    }
}

fn err(src: &str) -> ParseError {
    match parse(src, "Dockerfile") {
        Ok(d) => panic!("expected an error, got {d:#?}"),
        Err(e) => e,
    }
}

/// The instructions of the only (or last) stage.
fn instrs(src: &str) -> Vec<Instruction> {
    let d = ok(src);
    d.stages
        .last()
        .unwrap()
        .instructions
        .iter()
        .map(|i| i.node.clone())
        .collect()
}

fn one(src: &str) -> Instruction {
    let mut v = instrs(&format!("FROM scratch\n{src}"));
    assert_eq!(v.len(), 1, "{v:#?}");
    v.remove(0)
}

fn run(src: &str) -> Run {
    match one(src) {
        Instruction::Run(r) => r,
        other => panic!("{other:?}"),
    }
}

fn copy(src: &str) -> Copy {
    match one(src) {
        Instruction::Copy(c) => c,
        other => panic!("{other:?}"),
    }
}

fn add(src: &str) -> Add {
    match one(src) {
        Instruction::Add(c) => c,
        other => panic!("{other:?}"),
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

fn shell(s: &str) -> CommandLine {
    CommandLine::Shell(s.into())
}

fn exec(v: &[&str]) -> CommandLine {
    CommandLine::Exec(v.iter().map(|s| s.to_string()).collect())
}

/// Asserts the error's `line:column` and message.
fn assert_err(src: &str, line: usize, column: usize, message: &str) {
    let e = err(src);
    assert_eq!(
        (e.line, e.column, e.kind.to_string().as_str()),
        (line, column, message),
        "{e}\n--- source ---\n{src}"
    );
    assert_eq!(
        e.to_string(),
        format!("Dockerfile:{line}:{column}: {message}")
    );
}

#[test]
fn multi_stage_with_global_args() {
    let d = ok("# syntax=docker/dockerfile:1.7\n\
         ARG GO_VERSION=1.22\n\
         ARG BASE\n\
         FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS Build\n\
         RUN go build ./...\n\
         \n\
         FROM alpine:3.19 as runtime\n\
         COPY --from=build /out/app /app\n\
         FROM runtime\n");
    assert_eq!(
        d.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(d.escape(), '\\');
    assert_eq!(
        d.global_args,
        vec![
            Arg {
                name: "GO_VERSION".into(),
                default: Some("1.22".into()),
                line: 2
            },
            Arg {
                name: "BASE".into(),
                default: None,
                line: 3
            },
        ]
    );
    assert_eq!(d.stages.len(), 3);
    let s0 = &d.stages[0];
    assert_eq!(
        (
            s0.index,
            s0.name.as_deref(),
            s0.base.as_str(),
            s0.platform.as_deref(),
            s0.line
        ),
        (
            0,
            Some("build"),
            "golang:${GO_VERSION}",
            Some("$BUILDPLATFORM"),
            4
        )
    );
    assert_eq!(s0.instructions.len(), 1);
    assert_eq!(s0.instructions[0].span.line, 5);
    assert_eq!(d.stages[1].name.as_deref(), Some("runtime"));
    assert_eq!(d.stages[1].line, 7);
    assert_eq!(d.stages[2].name, None);
    assert_eq!(d.stages[2].base, "runtime");
    assert_eq!(d.stage("RUNTIME").unwrap().index, 1);
    assert_eq!(d.stage("2").unwrap().index, 2);
    assert!(d.stage("nope").is_none());
}

#[test]
fn directives() {
    let d = ok("# ESCAPE = `\n#Syntax=example/front:latest\n# check=skip=all\nFROM scratch\n");
    assert_eq!(d.escape(), '`');
    assert_eq!(d.directives.syntax.as_deref(), Some("example/front:latest"));
    assert_eq!(d.directives.check.as_deref(), Some("skip=all"));

    // A directive after a blank line, a comment or an unknown directive is a comment.
    for src in [
        "\n# escape=`\nFROM scratch\n",
        "# a comment\n# escape=`\nFROM scratch\n",
        "# unknown=x\n# escape=`\nFROM scratch\n",
        "FROM scratch\n# escape=`\n",
    ] {
        assert_eq!(ok(src).escape(), '\\', "{src:?}");
    }
    assert_err(
        "# escape=`\n# escape=\\\nFROM scratch\n",
        2,
        1,
        "only one escape parser directive can be used",
    );
    assert_err(
        "  # escape=x\nFROM scratch\n",
        1,
        3,
        "invalid escape token 'x' does not match ` or \\",
    );
}

#[test]
fn escape_backtick_windows_example() {
    // The reference's example: with `, `c:\` does not continue the line.
    let d = ok("# escape=`\n\nFROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\n");
    let i = &d.stages[0].instructions;
    assert_eq!(i.len(), 2);
    match &i[0].node {
        Instruction::Copy(c) => assert_eq!(
            (c.sources.clone(), c.dest.as_str()),
            (vec!["testfile.txt".into()], "c:\\")
        ),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        i[1].node,
        Instruction::Run(Run {
            command: shell("dir c:\\"),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![]
        })
    );
    // The same file without the directive joins the lines.
    let d = ok("FROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\n");
    match &d.stages[0].instructions[0].node {
        Instruction::Copy(c) => assert_eq!(
            (c.sources.join(" "), c.dest.as_str()),
            ("testfile.txt c:RUN dir".into(), "c:")
        ),
        o => panic!("{o:?}"),
    }
    // Backtick continuation and ENV values with backslashes.
    let d = ok("# escape=`\nFROM scratch\nRUN echo a `\n  b\nENV P=C:\\dir\n");
    let i = &d.stages[0].instructions;
    assert_eq!(
        i[0].node,
        Instruction::Run(Run {
            command: shell("echo a   b"),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![]
        })
    );
    match &i[1].node {
        Instruction::Env(kvs) => {
            assert_eq!(kvs, &vec![kv("P", "C:\\dir")]);
            assert_eq!(expand(&kvs[0].value, &|_| None, '`').unwrap(), "C:\\dir");
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn continuations_skip_comments_and_blank_lines() {
    let d = ok("FROM scratch\n\
                RUN apt-get update && \\\n\
                # a comment inside the continuation\n\
                \n\
                \x20   apt-get install -y \\\n\
                \x20     # indented comment\n\
                \x20     curl\n\
                CMD [\"x\"]\n");
    let i = &d.stages[0].instructions;
    assert_eq!(i.len(), 2);
    match &i[0].node {
        Instruction::Run(r) => assert_eq!(
            r.command,
            shell("apt-get update &&     apt-get install -y       curl")
        ),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        (i[0].span.line, i[0].span.end_line, i[0].span.column),
        (2, 7, 1)
    );
    assert_eq!(i[1].span.line, 8);

    // An escaped escape does not continue; trailing blanks after the escape do.
    let v = instrs("FROM scratch\nRUN echo a\\\\\nRUN echo b \\  \t\n  c\n");
    assert_eq!(v.len(), 2);
    assert_eq!(v[0], one("RUN echo a\\\\"));
    match &v[1] {
        Instruction::Run(r) => assert_eq!(r.command, shell("echo b   c")),
        o => panic!("{o:?}"),
    }
    // A continuation at the end of the file ends the instruction.
    match one("RUN echo end \\") {
        Instruction::Run(r) => assert_eq!(r.command, shell("echo end")),
        o => panic!("{o:?}"),
    }
    // CRLF line endings and a byte-order mark.
    let d = ok("\u{feff}FROM scratch\r\nRUN a \\\r\n b\r\nUSER me\r\n");
    assert_eq!(d.stages[0].instructions.len(), 2);
    assert_eq!(
        d.stages[0].instructions[1].node,
        Instruction::User("me".into())
    );
    // Lowercase keywords and leading whitespace.
    let d = ok("from scratch\n   workdir /x\n");
    assert_eq!(d.stages[0].instructions[0].span.column, 4);
}

#[test]
fn run_forms_and_flags() {
    assert_eq!(run("RUN echo hello").command, shell("echo hello"));
    assert_eq!(
        run("RUN [\"echo\", \"a b\"]").command,
        exec(&["echo", "a b"])
    );
    // Not valid JSON: shell form, like Docker.
    assert_eq!(
        run("RUN [ -f /x ] && echo y").command,
        shell("[ -f /x ] && echo y")
    );
    assert_eq!(
        run("RUN [\"unterminated\"").command,
        shell("[\"unterminated\"")
    );
    assert_eq!(run("RUN []").command, exec(&[]));

    let r = run(
        "RUN --mount=type=cache,target=/root/.cache,id=gocache,sharing=locked,mode=0755,uid=1000,gid=1000 \\\n\
                 \x20   --mount=type=bind,from=build,source=/out,target=/mnt,rw \\\n\
                 \x20   --mount=type=tmpfs,target=/tmp,size=64m \\\n\
                 \x20   --mount=type=secret,id=npmrc,target=/root/.npmrc,required \\\n\
                 \x20   --mount=type=secret,id=token,env=TOKEN \\\n\
                 \x20   --mount=type=ssh,id=default,mode=0600 \\\n\
                 \x20   --mount=target=/src \\\n\
                 \x20   --network=none --security=insecure \\\n\
                 \x20   make",
    );
    assert_eq!(r.command, shell("make"));
    assert_eq!(r.network, Some(NetworkMode::None));
    assert_eq!(r.security, Some(SecurityMode::Insecure));
    let m = &r.mounts;
    assert_eq!(m.len(), 7);
    assert_eq!(m[0].kind, MountType::Cache);
    assert_eq!(m[0].target.as_deref(), Some("/root/.cache"));
    assert_eq!(m[0].id.as_deref(), Some("gocache"));
    assert_eq!(m[0].sharing, Some(Sharing::Locked));
    assert_eq!(
        (m[0].mode, m[0].uid, m[0].gid),
        (Some(0o755), Some(1000), Some(1000))
    );
    assert!(!m[0].readonly);
    assert_eq!(m[1].kind, MountType::Bind);
    assert_eq!(
        (m[1].from.as_deref(), m[1].source.as_deref()),
        (Some("build"), Some("/out"))
    );
    assert!(!m[1].readonly);
    assert_eq!(
        (m[2].kind, m[2].size),
        (MountType::Tmpfs, Some(64 * 1024 * 1024))
    );
    assert_eq!(m[3].kind, MountType::Secret);
    assert!(m[3].required && m[3].readonly);
    assert_eq!(m[4].env.as_deref(), Some("TOKEN"));
    assert_eq!((m[5].kind, m[5].mode), (MountType::Ssh, Some(0o600)));
    assert_eq!(
        (m[6].kind, m[6].target.as_deref(), m[6].readonly),
        (MountType::Bind, Some("/src"), true)
    );

    // Quoted flag values and variables in mount options.
    let r =
        run("RUN --mount=\"type=cache,target=/a b\" --mount=type=cache,target=$DIR,uid=$UID true");
    assert_eq!(r.mounts[0].target.as_deref(), Some("/a b"));
    assert_eq!(r.mounts[1].target.as_deref(), Some("$DIR"));
    assert!(r.mounts[1].needs_expansion);
    assert_eq!(r.mounts[1].uid, None);
    let vars = |k: &str| match k {
        "DIR" => Some("/cache".to_owned()),
        "UID" => Some("42".to_owned()),
        _ => None,
    };
    let full =
        dockerfile::Mount::parse_expanded(&r.mounts[1].spec, &|w| expand(w, &vars, '\\')).unwrap();
    assert_eq!(
        (full.target.as_deref(), full.uid),
        (Some("/cache"), Some(42))
    );
    assert_eq!(run("RUN --network=host x").network, Some(NetworkMode::Host));
    assert_eq!(
        run("RUN --network=default --security=sandbox x").security,
        Some(SecurityMode::Sandbox)
    );
}

#[test]
fn cmd_entrypoint_shell() {
    assert_eq!(
        one("CMD [\"nginx\", \"-g\", \"daemon off;\"]"),
        Instruction::Cmd(exec(&["nginx", "-g", "daemon off;"]))
    );
    assert_eq!(one("CMD echo $HOME"), Instruction::Cmd(shell("echo $HOME")));
    assert_eq!(one("CMD []"), Instruction::Cmd(exec(&[])));
    assert_eq!(
        one("ENTRYPOINT [\"/bin/tini\", \"--\"]"),
        Instruction::Entrypoint(exec(&["/bin/tini", "--"]))
    );
    assert_eq!(
        one("ENTRYPOINT exec top -b"),
        Instruction::Entrypoint(shell("exec top -b"))
    );
    assert_eq!(
        one("SHELL [\"powershell\", \"-command\"]"),
        Instruction::Shell(vec!["powershell".into(), "-command".into()])
    );
    // JSON escapes.
    assert_eq!(
        one(r#"CMD ["a\"b", "c\\d", "\u00e9"]"#),
        Instruction::Cmd(exec(&["a\"b", "c\\d", "é"]))
    );
}

#[test]
fn copy_and_add() {
    let c = copy(
        "COPY --from=build --chown=app:app --chmod=0644 --link --parents --exclude=*.md --exclude=tmp/ a b/ /dst/",
    );
    assert_eq!(c.sources, ["a", "b/"]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("app:app"));
    assert_eq!(
        c.chmod.as_ref().map(|m| (m.raw.as_str(), m.mode)),
        Some(("0644", Some(0o644)))
    );
    assert!(c.link && c.parents && !c.json);
    assert_eq!(c.excludes, ["*.md", "tmp/"]);

    let c = copy("COPY [\"my file.txt\", \"other file\", \"/dest dir/\"]");
    assert_eq!(
        (c.sources.clone(), c.dest.as_str(), c.json),
        (
            vec!["my file.txt".into(), "other file".into()],
            "/dest dir/",
            true
        )
    );
    let c = copy("COPY --link=false --chmod=$MODE . .");
    assert!(!c.link);
    assert_eq!(c.chmod.unwrap().mode, None);
    let c = copy("COPY --chmod=755 x /y");
    assert_eq!(c.chmod.unwrap().mode, Some(0o755));

    let a = add(
        "ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d --chown=1:2 --chmod=600 --link --exclude=x \\\n    https://example.com/a.tar.gz /opt/",
    );
    assert_eq!(a.sources, ["https://example.com/a.tar.gz"]);
    assert_eq!(a.dest, "/opt/");
    assert!(a.checksum.as_deref().unwrap().starts_with("sha256:2445"));
    assert_eq!(a.chmod.unwrap().mode, Some(0o600));
    assert!(a.link && !a.keep_git_dir);
    assert_eq!(a.excludes, ["x"]);
    let a = add("ADD --keep-git-dir=true git@github.com:moby/buildkit.git#v0.10.1 /buildkit");
    assert!(a.keep_git_dir);
    // ADD has no --from / --parents; COPY has no --checksum.
    assert_err(
        "FROM scratch\nADD --from=x a b\n",
        2,
        5,
        "unknown flag: --from",
    );
    assert_err(
        "FROM scratch\nCOPY --checksum=sha256:00 a b\n",
        2,
        6,
        "unknown flag: --checksum",
    );
}

#[test]
fn env_label_arg() {
    assert_eq!(
        one("ENV k=v k2=\"v 2\" k3='single $x' k4=a\\ b"),
        Instruction::Env(vec![
            kv("k", "v"),
            kv("k2", "\"v 2\""),
            kv("k3", "'single $x'"),
            kv("k4", "a\\ b")
        ])
    );
    // Values are raw; expansion removes quotes.
    match one("ENV k2=\"v 2\" k3='single $x' k4=a\\ b") {
        Instruction::Env(kvs) => {
            let got: Vec<String> = kvs
                .iter()
                .map(|k| expand(&k.value, &|_| Some("X".into()), '\\').unwrap())
                .collect();
            assert_eq!(got, ["v 2", "single $x", "a b"]);
        }
        o => panic!("{o:?}"),
    }
    // Legacy form: everything after the key is the value.
    assert_eq!(
        one("ENV MY_VAR my value  here"),
        Instruction::Env(vec![kv("MY_VAR", "my value  here")])
    );
    assert_eq!(
        one(
            "LABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0 description=\"multi \\\n  line\""
        ),
        Instruction::Label(vec![
            kv("\"com.example.vendor\"", "\"ACME Inc\""),
            kv("version", "1.0"),
            kv("description", "\"multi   line\"")
        ])
    );
    assert_eq!(
        one("LABEL legacy value"),
        Instruction::Label(vec![kv("legacy", "value")])
    );
    assert_eq!(
        one("ARG a b=2 c=\"x y\" d="),
        Instruction::Arg(vec![
            Arg {
                name: "a".into(),
                default: None,
                line: 2
            },
            Arg {
                name: "b".into(),
                default: Some("2".into()),
                line: 2
            },
            Arg {
                name: "c".into(),
                default: Some("\"x y\"".into()),
                line: 2
            },
            Arg {
                name: "d".into(),
                default: Some(String::new()),
                line: 2
            },
        ])
    );
}

#[test]
fn simple_instructions() {
    assert_eq!(
        one("WORKDIR /app/$NAME"),
        Instruction::Workdir("/app/$NAME".into())
    );
    assert_eq!(one("USER app:app"), Instruction::User("app:app".into()));
    assert_eq!(
        one("STOPSIGNAL SIGTERM"),
        Instruction::StopSignal("SIGTERM".into())
    );
    assert_eq!(
        one("MAINTAINER Jane Doe <jane@example.com>"),
        Instruction::Maintainer("Jane Doe <jane@example.com>".into())
    );
    assert_eq!(
        one("EXPOSE 80 443/tcp 53/UDP 8000-8010 $PORT"),
        Instruction::Expose(vec![
            "80".into(),
            "443/tcp".into(),
            "53/UDP".into(),
            "8000-8010".into(),
            "$PORT".into()
        ])
    );
    assert_eq!(
        one("VOLUME [\"/data\", \"/var/log\"]"),
        Instruction::Volume(vec!["/data".into(), "/var/log".into()])
    );
    assert_eq!(
        one("VOLUME /data /cache"),
        Instruction::Volume(vec!["/data".into(), "/cache".into()])
    );
    assert_eq!(
        PortSpec::parse("53/UDP").unwrap(),
        PortSpec {
            start: 53,
            end: 53,
            protocol: Protocol::Udp
        }
    );
    assert_eq!(
        PortSpec::parse("8000-8002").unwrap().config_keys(),
        ["8000/tcp", "8001/tcp", "8002/tcp"]
    );
    assert!(PortSpec::parse("70000").is_err());
    assert!(PortSpec::parse("80/xyz").is_err());
    assert!(PortSpec::parse("9-1").is_err());
}

#[test]
fn healthcheck() {
    assert_eq!(
        one("HEALTHCHECK NONE"),
        Instruction::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        one(
            "HEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=500ms --retries=3 \\\n  CMD curl -f http://localhost/ || exit 1"
        ),
        Instruction::Healthcheck(Healthcheck::Cmd {
            command: shell("curl -f http://localhost/ || exit 1"),
            interval: Some(Duration::from_secs(300)),
            timeout: Some(Duration::from_secs(3)),
            start_period: Some(Duration::from_secs(90)),
            start_interval: Some(Duration::from_millis(500)),
            retries: Some(3),
        })
    );
    assert_eq!(
        one("HEALTHCHECK cmd [\"/bin/check\", \"-v\"]"),
        Instruction::Healthcheck(Healthcheck::Cmd {
            command: exec(&["/bin/check", "-v"]),
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        })
    );
    match one("HEALTHCHECK --interval=0s --retries=0 CMD true") {
        Instruction::Healthcheck(Healthcheck::Cmd {
            interval, retries, ..
        }) => {
            assert_eq!((interval, retries), (Some(Duration::ZERO), Some(0)));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn onbuild() {
    match one("ONBUILD RUN --mount=type=cache,target=/c make") {
        Instruction::Onbuild(o) => {
            assert_eq!(o.expression, "RUN --mount=type=cache,target=/c make");
            match *o.instruction {
                Instruction::Run(r) => {
                    assert_eq!(r.command, shell("make"));
                    assert_eq!(r.mounts[0].kind, MountType::Cache);
                }
                other => panic!("{other:?}"),
            }
        }
        o => panic!("{o:?}"),
    }
    match one("onbuild COPY . /app/src") {
        Instruction::Onbuild(o) => {
            assert_eq!(o.expression, "COPY . /app/src");
            assert!(matches!(*o.instruction, Instruction::Copy(_)));
        }
        o => panic!("{o:?}"),
    }
    let d = ok("FROM scratch\nONBUILD RUN <<EOF\necho hi\nEOF\n");
    match &d.stages[0].instructions[0].node {
        Instruction::Onbuild(o) => {
            assert_eq!(o.expression, "RUN <<EOF\necho hi\nEOF");
            match &*o.instruction {
                Instruction::Run(r) => assert_eq!(r.heredocs[0].content, "echo hi\n"),
                other => panic!("{other:?}"),
            }
        }
        o => panic!("{o:?}"),
    }
}

fn hd(name: &str, content: &str, expand: bool, chomp: bool, fd: Option<u32>) -> Heredoc {
    Heredoc {
        name: name.into(),
        content: content.into(),
        expand,
        chomp_tabs: chomp,
        fd,
    }
}

#[test]
fn heredoc_only_for_run_copy_add() {
    // BuildKit's heredoc test starts with `USER <<INVALID`: USER takes no heredoc, so the next
    // line is an instruction of its own (here an unknown one).
    assert_err(
        "FROM alpine\nUSER <<INVALID\nINVALID\n",
        3,
        1,
        "unknown instruction: INVALID",
    );
    assert_eq!(one("USER <<INVALID"), Instruction::User("<<INVALID".into()));
    // JSON forms take none either.
    for src in ["RUN [\"whoami\"]", "RUN [\"<<EOF\"]", "RUN [\"<<'EOF'\"]"] {
        assert!(run(src).heredocs.is_empty(), "{src}");
    }
}

#[test]
fn heredocs() {
    let src = "FROM alpine\n\
RUN <<EMPTY\nEMPTY\n\
RUN 3<<EMPTY2\nEMPTY2\n\
RUN \"<<NOHEREDOC\"\n\
RUN <<INDENT\n\tfoo\n\tbar\nINDENT\n\
RUN <<-UNINDENT\n\tbaz\n\tquux\nUNINDENT\n\
RUN <<-UNINDENT2\n\tbaz\n\tquux\n\tUNINDENT2\n\
RUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\n\
RUN <<COMMENT\n# internal comment\n\necho foo bar # trailing comment\nCOMMENT\n\
RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n\
COPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n\
COPY <<X <<Y /dest\nY\nX\nX\nY\n\
RUN <<COMPLEX python3\nprint('hello world')\nCOMPLEX\n\
COPY <<file.txt /dest\nhello world\nfile.txt\n\
RUN <<eo'f'\necho foo\neof\n\
RUN <<eo\\'f\necho foo\neo'f\n\
RUN <<'e'o\\'f\necho foo\neo'f\n\
RUN <<'one two'\necho bar\none two\n\
RUN <<$EOF\n$EOF\n\
RUN <<  EOF\nEOF\n\
RUN <<  EOF  > foo\nEOF\n\
RUN << -EOF\n-EOF\n\
ADD <<\"conf\" /etc/app.conf\nkey=$VALUE\nconf\n\
RUN [\"<<EOF\"]\n\
RUN cat <<A && cat <<B\na\nA\nb\nB\n\
USER done\n";
    let d = ok(src);
    let got: Vec<Vec<Heredoc>> = d.stages[0]
        .instructions
        .iter()
        .map(|i| match &i.node {
            Instruction::Run(r) => r.heredocs.clone(),
            Instruction::Copy(c) => c.heredocs.clone(),
            Instruction::Add(c) => c.heredocs.clone(),
            _ => vec![],
        })
        .collect();
    let want: Vec<Vec<Heredoc>> = vec![
        vec![hd("EMPTY", "", true, false, None)],
        vec![hd("EMPTY2", "", true, false, Some(3))],
        vec![],
        vec![hd("INDENT", "\tfoo\n\tbar\n", true, false, None)],
        vec![hd("UNINDENT", "baz\nquux\n", true, true, None)],
        vec![hd("UNINDENT2", "baz\nquux\n", true, true, None)],
        vec![hd("NOEXPAND", "don't expand $NAME\n", false, true, None)],
        vec![hd(
            "COMMENT",
            "# internal comment\n\necho foo bar # trailing comment\n",
            true,
            false,
            None,
        )],
        vec![hd("MOUNT", "echo hello\n", true, false, None)],
        vec![
            hd("FILE1", "content 1\n", true, false, None),
            hd("FILE2", "content 2\n", true, false, None),
        ],
        vec![
            hd("X", "Y\n", true, false, None),
            hd("Y", "X\n", true, false, None),
        ],
        vec![hd("COMPLEX", "print('hello world')\n", true, false, None)],
        vec![hd("file.txt", "hello world\n", true, false, None)],
        vec![hd("eof", "echo foo\n", false, false, None)],
        vec![hd("eo'f", "echo foo\n", true, false, None)],
        vec![hd("eo'f", "echo foo\n", false, false, None)],
        vec![hd("one two", "echo bar\n", false, false, None)],
        vec![hd("$EOF", "", true, false, None)],
        vec![hd("EOF", "", true, false, None)],
        vec![hd("EOF", "", true, false, None)],
        vec![hd("-EOF", "", true, false, None)],
        vec![hd("conf", "key=$VALUE\n", false, false, None)],
        vec![],
        vec![
            hd("A", "a\n", true, false, None),
            hd("B", "b\n", true, false, None),
        ],
        vec![],
    ];
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g, w,
            "instruction {i}: {:?}",
            d.stages[0].instructions[i].node
        );
    }
    // Spans cover the bodies.
    let i = &d.stages[0].instructions;
    assert_eq!((i[3].span.line, i[3].span.end_line), (7, 10));
    // COPY sources exclude heredocs; the destination stays.
    match &i[9].node {
        Instruction::Copy(c) => assert_eq!((c.sources.len(), c.dest.as_str()), (0, "/dest")),
        o => panic!("{o:?}"),
    }
    match &i[11].node {
        Instruction::Run(r) => assert_eq!(r.command, shell("<<COMPLEX python3")),
        o => panic!("{o:?}"),
    }
    assert_eq!(i.last().unwrap().node, Instruction::User("done".into()));
}

#[test]
fn error_positions() {
    assert_err("FROM scratch\nFOO bar\n", 2, 1, "unknown instruction: FOO");
    assert_err(
        "FROM scratch\n  foo bar\n",
        2,
        3,
        "unknown instruction: foo",
    );
    assert_err(
        "FROM scratch\nRUN --foo=bar echo\n",
        2,
        5,
        "unknown flag: --foo",
    );
    assert_err(
        "FROM scratch\nRUN echo a && \\\n    --x\nRUN \\\n  --mount=type=cache,target=/x \\\n  --bogus make\n",
        6,
        3,
        "unknown flag: --bogus",
    );
    assert_err(
        "FROM scratch\nMAINTAINER --boo joe@example.com\n",
        2,
        12,
        "unknown flag: --boo",
    );
    assert_err(
        "FROM scratch\nCOPY --link --link a b\n",
        2,
        13,
        "duplicate flag specified: --link",
    );
    assert_err(
        "FROM scratch\nCOPY --from a b\n",
        2,
        6,
        "missing a value on flag: --from",
    );
    assert_err(
        "FROM scratch\nCOPY --link=maybe a b\n",
        2,
        6,
        "expecting boolean value for flag --link, not: maybe",
    );
    assert_err(
        "RUN echo hi\nFROM scratch\n",
        1,
        1,
        "RUN instruction before the first FROM: only ARG may precede FROM",
    );
    assert_err(
        "ARG X\n\n  ENV A=b\nFROM scratch\n",
        3,
        3,
        "ENV instruction before the first FROM: only ARG may precede FROM",
    );
    assert_err(
        "FROM alpine AS 1st\n",
        1,
        16,
        "invalid name for build stage: \"1st\", name can't start with a number or contain symbols",
    );
    assert_err(
        "FROM alpine AS b@d\n",
        1,
        16,
        "invalid name for build stage: \"b@d\", name can't start with a number or contain symbols",
    );
    assert_err(
        "FROM alpine AS base\nFROM busybox AS Base\n",
        2,
        17,
        "duplicate stage name \"base\"",
    );
    assert_err(
        "FROM alpine base\n",
        1,
        13,
        "FROM requires either one or three arguments",
    );
    assert_err(
        "FROM a AS b c\n",
        1,
        8,
        "FROM requires either one or three arguments",
    );
    assert_err(
        "FROM\n",
        1,
        1,
        "FROM requires either one or three arguments",
    );
    assert_err(
        "FROM scratch\nONBUILD ONBUILD RUN touch foobar\n",
        2,
        9,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    );
    assert_err(
        "FROM scratch\nONBUILD FROM scratch\n",
        2,
        9,
        "FROM isn't allowed as an ONBUILD trigger",
    );
    assert_err(
        "FROM scratch\nONBUILD  maintainer me\n",
        2,
        10,
        "MAINTAINER isn't allowed as an ONBUILD trigger",
    );
    assert_err(
        "FROM scratch\nONBUILD BOGUS x\n",
        2,
        9,
        "unknown instruction: BOGUS",
    );
    assert_err(
        "FROM scratch\nHEALTHCHECK --interval=5 CMD true\n",
        2,
        13,
        "invalid duration \"5\" for --interval",
    );
    assert_err(
        "FROM scratch\nHEALTHCHECK --timeout=50ns CMD true\n",
        2,
        13,
        "Interval \"timeout\" cannot be less than 1ms",
    );
    assert_err(
        "FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n",
        2,
        13,
        "invalid --retries value \"-1\": must be a non-negative integer",
    );
    assert_err(
        "FROM scratch\nHEALTHCHECK --retries=x CMD true\n",
        2,
        13,
        "invalid --retries value \"x\": must be a non-negative integer",
    );
    assert_err(
        "FROM scratch\nHEALTHCHECK NONE extra\n",
        2,
        18,
        "HEALTHCHECK NONE takes no arguments",
    );
    assert_err(
        "FROM scratch\nHEALTHCHECK CHECK true\n",
        2,
        13,
        "Unknown type \"CHECK\" in HEALTHCHECK (try CMD)",
    );
    assert_err(
        "FROM scratch\nHEALTHCHECK CMD\n",
        2,
        13,
        "Missing command after HEALTHCHECK CMD",
    );
    assert_err(
        "FROM scratch\nCOPY --chmod=0999 a b\n",
        2,
        6,
        "invalid --chmod value \"0999\": must be an octal mode such as 0755",
    );
    assert_err(
        "FROM scratch\nADD --chmod=u+x a b\n",
        2,
        5,
        "invalid --chmod value \"u+x\": must be an octal mode such as 0755",
    );
    assert_err(
        "FROM scratch\nCOPY a\n",
        2,
        1,
        "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
    );
    assert_err(
        "FROM scratch\nADD\n",
        2,
        1,
        "ADD requires at least two arguments, but only one was provided. Destination could not be determined",
    );
    assert_err(
        "FROM scratch\nCOPY a <<EOF\nx\nEOF\n",
        2,
        8,
        "COPY cannot accept a heredoc as a destination",
    );
    assert_err(
        "FROM scratch\nRUN [\"a\", 1]\n",
        2,
        5,
        "when using JSON array syntax, arrays must be comprised of strings only",
    );
    assert_err(
        "FROM scratch\nVOLUME [\"/a\", null]\n",
        2,
        8,
        "when using JSON array syntax, arrays must be comprised of strings only",
    );
    assert_err(
        "FROM scratch\nSHELL /bin/sh -c\n",
        2,
        7,
        "SHELL requires the arguments to be in JSON form",
    );
    assert_err(
        "FROM scratch\nSHELL []\n",
        2,
        7,
        "SHELL requires at least one argument",
    );
    assert_err(
        "FROM scratch\nVOLUME [\"\"]\n",
        2,
        8,
        "VOLUME specified can not be an empty string",
    );
    assert_err(
        "FROM scratch\nRUN <<EOF\necho hi\nEOFX\n",
        2,
        5,
        "unterminated heredoc \"EOF\"",
    );
    assert_err(
        "FROM scratch\nRUN cat <<-A <<B\nx\n\tA\n",
        2,
        14,
        "unterminated heredoc \"B\"",
    );
    assert_err(
        "FROM scratch\nRUN --network=bridge x\n",
        2,
        5,
        "unsupported network mode \"bridge\"",
    );
    assert_err(
        "FROM scratch\nRUN --security=privileged x\n",
        2,
        5,
        "unsupported security mode \"privileged\"",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=nfs,target=/x x\n",
        2,
        5,
        "invalid --mount: unsupported mount type \"nfs\"",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=cache,target=/x,foo=bar x\n",
        2,
        5,
        "invalid --mount: unexpected key 'foo' in 'foo=bar'",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=bind,target=/x,mode=0755 x\n",
        2,
        5,
        "invalid --mount: mode not allowed for \"bind\" type mounts",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=cache,target=/x,sharing=weird x\n",
        2,
        5,
        "invalid --mount: unsupported sharing value \"weird\"",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=bind,target=/x,sharing=locked x\n",
        2,
        5,
        "invalid --mount: invalid cache sharing set for bind mount",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=secret x\n",
        2,
        5,
        "invalid --mount: invalid secret mount: one of source, target, id or env required",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=bind,from=$STAGE,target=/x x\n",
        2,
        5,
        "invalid --mount: 'from' doesn't support variable expansion, define alias stage instead",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=tmpfs,target=/t,size=huge x\n",
        2,
        5,
        "invalid --mount: invalid value for size: huge",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=cache,target=/t,uid=-1 x\n",
        2,
        5,
        "invalid --mount: invalid value for uid: -1",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=cache,ro=maybe,target=/t x\n",
        2,
        5,
        "invalid --mount: invalid value for ro: maybe",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=bind,target=/t,required x\n",
        2,
        5,
        "invalid --mount: unexpected key 'required' for mount type 'bind'",
    );
    assert_err(
        "FROM scratch\nRUN --mount=type=bind,,target=/t x\n",
        2,
        5,
        "invalid --mount: invalid field '' must be a key=value pair",
    );
    assert_err(
        "FROM scratch\nEXPOSE 80 8080/xyz\n",
        2,
        11,
        "EXPOSE: invalid proto \"xyz\"",
    );
    assert_err(
        "FROM scratch\nEXPOSE 99999\n",
        2,
        8,
        "EXPOSE: invalid port \"99999\"",
    );
    assert_err(
        "FROM scratch\nENV a=1 b\n",
        2,
        9,
        "Syntax error - can't find = in \"b\". Must be of the form: name=value",
    );
    assert_err("FROM scratch\nENV =x\n", 2, 5, "ENV names can not be blank");
    assert_err(
        "FROM scratch\nLABEL onlykey\n",
        2,
        7,
        "LABEL must have two arguments",
    );
    assert_err(
        "FROM scratch\nARG a =b\n",
        2,
        7,
        "ARG names can not be blank",
    );
    for kw in [
        "ENV",
        "LABEL",
        "ONBUILD",
        "HEALTHCHECK",
        "EXPOSE",
        "VOLUME",
        "ARG",
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
    ] {
        assert_err(
            &format!("FROM scratch\n{kw}\n"),
            2,
            1,
            &format!("{kw} requires at least one argument"),
        );
    }
    for kw in ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"] {
        assert_err(
            &format!("FROM scratch\n{kw}   \n"),
            2,
            1,
            &format!("{kw} requires exactly one argument"),
        );
    }
    assert_err("", 1, 1, "file with no instructions");
    assert_err("# just a comment\n\n", 2, 1, "file with no instructions");
    assert_err("ARG A=1\n", 1, 1, "dockerfile contains no stages to build");
    // Errors on continuation lines point at the right physical line and column.
    assert_err(
        "FROM scratch\nCOPY \\\n   --from=x \\\n   --chmod=9 \\\n   a b\n",
        4,
        4,
        "invalid --chmod value \"9\": must be an octal mode such as 0755",
    );
    // Unicode before the error counts in characters.
    assert_err(
        "FROM scratch\nLABEL é=1 ü\n",
        2,
        11,
        "Syntax error - can't find = in \"ü\". Must be of the form: name=value",
    );
    // The file name is kept.
    let e = parse("FROM scratch\nNOPE\n", "build/Dockerfile.dev").unwrap_err();
    assert_eq!(
        e.to_string(),
        "build/Dockerfile.dev:2:1: unknown instruction: NOPE"
    );
    assert_eq!(e.kind, ParseErrorKind::UnknownInstruction("NOPE".into()));
}

#[test]
fn no_panics_on_odd_inputs() {
    // Every keyword with assorted argument shapes (BuildKit's TestNilLinter), plus junk.
    let keywords = [
        "FROM",
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "COPY",
        "ADD",
        "ARG",
        "ENV",
        "LABEL",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "VOLUME",
        "HEALTHCHECK",
        "ONBUILD",
        "STOPSIGNAL",
        "MAINTAINER",
        "BOGUS",
    ];
    let shapes = [
        "",
        " foo=bar",
        " a",
        " a b",
        " a b c",
        " 0 0",
        " [",
        " [\"a\"",
        " []",
        " [1]",
        " \"",
        " '",
        " \\",
        " --",
        " --x",
        " --=",
        " <<",
        " <<-",
        " <<'",
        " <<EOF",
        " ${",
        " $",
        " é",
        " --mount=",
        " --mount=\"",
        " NONE",
        " CMD",
        " ONBUILD",
        " RUN <<X",
        " --interval= CMD x",
        " --chmod= a b",
    ];
    for kw in keywords {
        for shape in shapes {
            for prefix in ["", "FROM busybox\n"] {
                let src = format!("{prefix}{kw}{shape}\n");
                let _ = parse(&src, "Dockerfile");
                let _ = parse(&format!("{src}x\nX\n"), "Dockerfile");
            }
        }
    }
    // Pseudo-random byte soup (deterministic).
    let alphabet: Vec<char> = "FROMRUNCOPYADD \t\n\\`\"'$={}[]<<-#:,/é\r*?!"
        .chars()
        .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut s = String::from("FROM x\n");
        for _ in 0..(seed % 60) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        let _ = parse(&s, "Dockerfile");
        let _ = dockerfile::expand(&s, &|_| Some("v".into()), '\\');
        let _ = dockerfile::expand_words(&s, &|_| None, '`');
        let _ = dockerfile::DockerIgnore::parse(&s).map(|d| d.matches(&s));
    }
}
