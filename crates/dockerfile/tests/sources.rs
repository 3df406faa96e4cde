//! COPY/ADD sources (wildcards, context confinement) and predefined build arguments.

use std::fs;

use dockerfile::{
    PLATFORM_ARGS, PROXY_ARGS, Platform, SourceError, clean_source, glob_match, is_proxy_arg,
    match_sources, platform_args, resolve_sources,
};

#[test]
fn cleaning_sources() {
    assert_eq!(clean_source(".").unwrap(), ".");
    assert_eq!(clean_source("/").unwrap(), ".");
    assert_eq!(clean_source("./src/").unwrap(), "src");
    assert_eq!(clean_source("/a//b/./c").unwrap(), "a/b/c");
    assert_eq!(clean_source("a/../b").unwrap(), "b");
    for bad in ["..", "../x", "a/../../x", "./../etc/passwd"] {
        let e = clean_source(bad).unwrap_err();
        assert!(matches!(e, SourceError::OutsideContext(_)), "{bad}");
        assert_eq!(
            e.to_string(),
            format!("forbidden path outside the build context: {bad}")
        );
    }
    // A rooted `..` stays at the root.
    assert_eq!(clean_source("/../x").unwrap(), "x");
}

#[test]
fn matching_candidates() {
    let files = [
        "a.txt",
        "b.txt",
        "c.md",
        "dir/a.txt",
        "dir/sub/b.txt",
        ".hidden.txt",
        "[x].txt",
        "x.txt",
        "a b.txt",
    ];
    let m = |p: &str| match_sources(p, files.iter().copied()).unwrap();
    assert_eq!(
        m("*.txt"),
        [
            "a.txt",
            "b.txt",
            ".hidden.txt",
            "[x].txt",
            "x.txt",
            "a b.txt"
        ]
    );
    assert_eq!(m("dir/*.txt"), ["dir/a.txt"]);
    assert_eq!(m("*/*.txt"), ["dir/a.txt"]);
    assert_eq!(m("dir/*/*.txt"), ["dir/sub/b.txt"]);
    assert_eq!(m("?.txt"), ["a.txt", "b.txt", "x.txt"]);
    assert_eq!(m("[ab].txt"), ["a.txt", "b.txt"]);
    assert_eq!(m("[^ab].txt"), ["x.txt"]);
    assert_eq!(m("\\[x\\].txt"), ["[x].txt"]);
    assert_eq!(m("/c.md"), ["c.md"]);
    assert_eq!(m("./dir/a.txt"), ["dir/a.txt"]);
    assert!(
        m("**/b.txt").is_empty(),
        "no ** in COPY sources: it is `*` twice"
    );
    assert!(matches!(
        match_sources("[", files.iter().copied()),
        Err(SourceError::Pattern(_))
    ));
    assert!(matches!(
        match_sources("../*", files.iter().copied()),
        Err(SourceError::OutsideContext(_))
    ));
    assert!(glob_match("a/*/c", "a/b/c").unwrap());
    assert!(!glob_match("a/*", "a/b/c").unwrap());
}

#[test]
fn resolving_in_a_context() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path();
    for f in [
        "app/main.go",
        "app/util.go",
        "app/README.md",
        "pkg/a/x.go",
        "pkg/b/y.go",
        "pkg/b/z.txt",
        "top.go",
    ] {
        let p = ctx.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "x").unwrap();
    }
    fs::create_dir_all(ctx.join("pkg/empty")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join("secret")).unwrap();
    fs::write(outside.path().join("secret/key.go"), "k").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), ctx.join("pkg/link")).unwrap();

    let r = |s: &str| resolve_sources(ctx, s).unwrap();
    assert_eq!(r("*.go"), ["top.go"]);
    assert_eq!(r("app/*.go"), ["app/main.go", "app/util.go"]);
    assert_eq!(
        r("pkg/*/*.go"),
        ["pkg/a/x.go", "pkg/b/y.go"],
        "the symlinked directory is not entered"
    );
    assert_eq!(r("pkg/*"), ["pkg/a", "pkg/b", "pkg/empty", "pkg/link"]);
    assert_eq!(r("p?g/b/*.txt"), ["pkg/b/z.txt"]);
    assert_eq!(r("/app/main.go"), ["app/main.go"]);
    assert_eq!(r("app"), ["app"]);
    assert_eq!(r("."), ["."]);
    assert!(r("*.rs").is_empty(), "empty wildcards are allowed");
    assert!(r("nope/*.go").is_empty());
    assert!(r("top.go/*").is_empty());
    assert!(
        matches!(resolve_sources(ctx, "missing.txt"), Err(SourceError::NotFound(p)) if p == "missing.txt")
    );
    assert!(matches!(
        resolve_sources(ctx, "../etc"),
        Err(SourceError::OutsideContext(_))
    ));
    assert!(matches!(
        resolve_sources(ctx, "pkg/../../x/*"),
        Err(SourceError::OutsideContext(_))
    ));
    assert!(
        r("app/[z-a]*").is_empty(),
        "an inverted range matches nothing, as in Go"
    );
    assert!(matches!(
        resolve_sources(ctx, "app/[*"),
        Err(SourceError::Pattern(_))
    ));
}

#[test]
fn platform_and_proxy_args() {
    let build = Platform::parse("linux/amd64").unwrap();
    let target = Platform::parse("linux/arm/v7").unwrap();
    let args = platform_args(&build, &target);
    let names: Vec<&str> = args.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, PLATFORM_ARGS);
    let get = |k: &str| {
        args.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    assert_eq!(get("TARGETPLATFORM"), "linux/arm/v7");
    assert_eq!(get("TARGETOS"), "linux");
    assert_eq!(get("TARGETARCH"), "arm");
    assert_eq!(get("TARGETVARIANT"), "v7");
    assert_eq!(get("BUILDPLATFORM"), "linux/amd64");
    assert_eq!(get("BUILDOS"), "linux");
    assert_eq!(get("BUILDARCH"), "amd64");
    assert_eq!(get("BUILDVARIANT"), "");

    for (s, want) in [
        ("linux/x86_64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/armhf", "linux/arm/v7"),
        ("Linux/ARM/6", "linux/arm/v6"),
        ("windows/amd64", "windows/amd64"),
        ("linux/riscv64", "linux/riscv64"),
        ("arm64", "linux/arm64"),
    ] {
        assert_eq!(Platform::parse(s).unwrap().to_string(), want, "{s}");
    }
    assert_eq!(Platform::parse("linux").unwrap().os, "linux");
    for bad in ["", "linux//arm", "a/b/c/d", "linux/amd64 "] {
        assert!(
            Platform::parse(bad).is_err() || bad.trim() != bad,
            "{bad:?}"
        );
    }
    let host = Platform::host();
    assert!(!host.os.is_empty() && !host.architecture.is_empty());

    assert_eq!(PROXY_ARGS.len(), 10);
    for p in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "FTP_PROXY",
        "ftp_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        assert!(is_proxy_arg(p), "{p}");
    }
    assert!(!is_proxy_arg("Http_Proxy"));
    assert!(!is_proxy_arg("TARGETARCH"));
}
