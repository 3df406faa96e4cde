//! Parses every Dockerfile of `tests/corpus/` and checks that together they use every
//! instruction, then spot-checks what each file must produce.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dockerfile::{
    CommandLine, DockerIgnore, Dockerfile, Healthcheck, Instruction, MountType, expand, parse,
};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load(name: &str) -> Dockerfile {
    let path = corpus_dir().join(name);
    let src = std::fs::read_to_string(&path).unwrap();
    parse(&src, name).unwrap_or_else(|e| panic!("{e}"))
}

fn all_instructions(d: &Dockerfile) -> Vec<&Instruction> {
    let mut out = Vec::new();
    for s in &d.stages {
        for i in &s.instructions {
            out.push(&i.node);
            if let Instruction::Onbuild(o) = &i.node {
                out.push(&o.instruction);
            }
        }
    }
    out
}

#[test]
fn every_corpus_file_parses_and_all_instructions_appear() {
    let mut seen: BTreeSet<&'static str> = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("Dockerfile") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let d = load(&name);
        files += 1;
        seen.insert("FROM");
        if !d.global_args.is_empty() {
            seen.insert("ARG");
        }
        for i in all_instructions(&d) {
            seen.insert(i.keyword());
        }
        // Spans are ordered and inside the file.
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        let mut last = 0;
        for s in &d.stages {
            assert!(s.line > last, "{name}");
            last = s.line;
            for i in &s.instructions {
                assert!(
                    i.span.line > last
                        && i.span.end_line >= i.span.line
                        && i.span.end_line <= lines,
                    "{name}: {i:?}"
                );
                last = i.span.end_line;
            }
        }
    }
    assert!(files >= 5, "corpus files: {files}");
    let all: BTreeSet<&str> = [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "MAINTAINER",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ]
    .into_iter()
    .collect();
    assert_eq!(seen, all);
}

#[test]
fn go_service() {
    let d = load("go-service.Dockerfile");
    assert_eq!(
        d.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(d.directives.check.as_deref(), Some("error=true"));
    assert_eq!(d.global_args.len(), 2);
    let names: Vec<_> = d
        .stages
        .iter()
        .map(|s| s.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["build", "test", "runtime"]);
    assert_eq!(d.stages[0].platform.as_deref(), Some("$BUILDPLATFORM"));
    let vars = |k: &str| match k {
        "GO_VERSION" => Some("1.22".to_owned()),
        _ => None,
    };
    assert_eq!(
        expand(&d.stages[0].base, &vars, d.escape()).unwrap(),
        "golang:1.22-alpine"
    );
    let build = &d.stages[0].instructions;
    match &build[6].node {
        Instruction::Run(r) => {
            assert_eq!(r.mounts.len(), 3);
            assert_eq!(r.mounts[2].kind, MountType::Secret);
            assert!(r.mounts[2].required);
            assert!(matches!(&r.command, CommandLine::Shell(s) if s.starts_with("GOOS=$TARGETOS")));
        }
        o => panic!("{o:?}"),
    }
    let rt = &d.stages[2].instructions;
    assert!(rt.iter().any(|i| matches!(
        &i.node,
        Instruction::Healthcheck(Healthcheck::Cmd {
            retries: Some(3),
            ..
        })
    )));
}

#[test]
fn node_app_heredocs() {
    let d = load("node-app.Dockerfile");
    let config = d.stage("config").unwrap();
    match &config.instructions[0].node {
        Instruction::Run(r) => {
            assert_eq!(r.command, CommandLine::Shell("<<EOF".into()));
            assert!(r.heredocs[0].content.starts_with("set -eux\n"));
        }
        o => panic!("{o:?}"),
    }
    match &config.instructions[1].node {
        Instruction::Copy(c) => {
            let h = &c.heredocs[0];
            assert_eq!(
                (h.name.as_str(), h.expand, h.chomp_tabs),
                ("CONF", false, true)
            );
            assert_eq!(h.content, "listen = 3000\nuser = ${APP_USER}\n");
            assert_eq!(c.dest, "/etc/app/app.conf");
        }
        o => panic!("{o:?}"),
    }
    match &config.instructions[2].node {
        Instruction::Copy(c) => {
            let names: Vec<_> = c.heredocs.iter().map(|h| h.name.as_str()).collect();
            assert_eq!(names, ["nginx.conf", "robots.txt"]);
        }
        o => panic!("{o:?}"),
    }
    let last = d.stages.last().unwrap();
    let onbuild: Vec<_> = last
        .instructions
        .iter()
        .filter_map(|i| match &i.node {
            Instruction::Onbuild(o) => Some(o.expression.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(onbuild, ["COPY . /app/src", "RUN npm run build"]);
}

#[test]
fn windows_escape() {
    let d = load("windows.Dockerfile");
    assert_eq!(d.escape(), '`');
    let b = &d.stages[0].instructions;
    match &b[1].node {
        Instruction::Env(kvs) => {
            let vals: Vec<String> = kvs
                .iter()
                .map(|k| expand(&k.value, &|_| None, '`').unwrap())
                .collect();
            assert_eq!(vals, ["C:\\app", "C:\\tools"]);
        }
        o => panic!("{o:?}"),
    }
    match &b[3].node {
        Instruction::Copy(c) => assert_eq!(c.dest, "C:\\app\\"),
        o => panic!("{o:?}"),
    }
    match &b[4].node {
        Instruction::Run(r) => assert_eq!(
            r.command,
            CommandLine::Shell(
                "Write-Host 'Installing';     New-Item -ItemType Directory -Path C:\\tools | Out-Null;     .\\build.ps1 -Configuration Release".into()
            )
        ),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        d.stages[1].instructions[2].node,
        Instruction::Entrypoint(CommandLine::Exec(vec!["C:\\app\\app.exe".into()]))
    );
}

#[test]
fn python_legacy() {
    let d = load("python-legacy.Dockerfile");
    let b = &d.stages[0].instructions;
    assert_eq!(d.stages[0].name.as_deref(), Some("builder"));
    assert!(matches!(&b[0].node, Instruction::Maintainer(m) if m == "Jane Doe <jane@example.com>"));
    assert!(
        matches!(&b[1].node, Instruction::Env(kv) if kv[0].key == "PIP_NO_CACHE_DIR" && kv[0].value == "1")
    );
    match &b[7].node {
        Instruction::Run(r) => assert_eq!(
            r.command,
            CommandLine::Shell(
                "pip install --prefix=/install         -r /reqs/requirements.txt         wheel"
                    .into()
            )
        ),
        o => panic!("{o:?}"),
    }
    match &b[6].node {
        Instruction::Copy(c) => {
            assert!(c.parents);
            assert_eq!(c.excludes, ["*.pyc", "**/__pycache__"]);
        }
        o => panic!("{o:?}"),
    }
    assert!(
        d.stages[1]
            .instructions
            .iter()
            .any(|i| i.node == Instruction::Healthcheck(Healthcheck::None))
    );
}

#[test]
fn corpus_dockerignore() {
    let src = std::fs::read_to_string(corpus_dir().join("example.dockerignore")).unwrap();
    let d = DockerIgnore::parse(&src).unwrap();
    assert!(d.matches(".git/config"));
    assert!(d.matches("web/node_modules/react/index.js"));
    assert!(d.matches("CHANGELOG.md"));
    assert!(!d.matches("README.md"));
    assert!(d.matches("build/out.bin"));
    assert!(!d.matches("build/keep/a"));
    assert!(d.matches("lib/x/y.pyc"));
    assert!(d.matches("secrets/key"));
    assert!(d.matches("tmp/a.log"));
    assert!(!d.matches("tmp/a.txt"));
    assert!(d.excludes_dir_entirely(".git"));
    assert!(d.excludes_dir_entirely("app/node_modules"));
    assert!(!d.excludes_dir_entirely("build"));
}
