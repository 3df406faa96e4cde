//! `.dockerignore`: moby patternmatcher and ignorefile cases.

use std::fs;

use dockerfile::{DockerIgnore, DockerIgnoreErrorKind, find_ignore_file};

fn di(patterns: &[&str]) -> DockerIgnore {
    DockerIgnore::parse(&patterns.join("\n")).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum M {
    Fail,
    Exact,
    Inexact,
}

#[test]
fn patternmatcher_matches_table() {
    // moby/patternmatcher TestMatches: `Exact` matches the path itself, `Inexact` only
    // through a parent directory; both exclude the path. (The cases matching "/" are left
    // out: paths are cleaned here, and the context root is never excluded.)
    use M::*;
    let cases: &[(&str, &str, M)] = &[
        ("**", "file", Exact),
        ("**", "file/", Exact),
        ("**/", "file", Exact),
        ("**/", "file/", Exact),
        ("**", "dir/file", Exact),
        ("**/", "dir/file", Exact),
        ("**", "dir/file/", Exact),
        ("**/", "dir/file/", Exact),
        ("**/**", "dir/file", Exact),
        ("**/**", "dir/file/", Exact),
        ("dir/**", "dir/file", Exact),
        ("dir/**", "dir/file/", Exact),
        ("dir/**", "dir/dir2/file", Exact),
        ("dir/**", "dir/dir2/file/", Exact),
        ("**/dir", "dir", Exact),
        ("**/dir", "dir/file", Inexact),
        ("**/dir2/*", "dir/dir2/file", Exact),
        ("**/dir2/*", "dir/dir2/file/", Inexact),
        ("**/dir2/**", "dir/dir2/dir3/file", Exact),
        ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
        ("**file", "file", Exact),
        ("**file", "dir/file", Exact),
        ("**/file", "dir/file", Exact),
        ("**file", "dir/dir/file", Exact),
        ("**/file", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file.txt", Exact),
        ("**/file*txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt*", "dir/dir/file.txt", Exact),
        ("**/**/*.txt", "dir/dir/file.txt", Exact),
        ("**/**/*.txt2", "dir/dir/file.txt", Fail),
        ("**/*.txt", "file.txt", Exact),
        ("**/**/*.txt", "file.txt", Exact),
        ("a**/*.txt", "a/file.txt", Exact),
        ("a**/*.txt", "a/dir/file.txt", Exact),
        ("a**/*.txt", "a/dir/dir/file.txt", Exact),
        ("a/*.txt", "a/dir/file.txt", Fail),
        ("a/*.txt", "a/file.txt", Exact),
        ("a/*.txt**", "a/file.txt", Exact),
        ("a[b-d]e", "ae", Fail),
        ("a[b-d]e", "ace", Exact),
        ("a[b-d]e", "aae", Fail),
        ("a[^b-d]e", "aze", Exact),
        (".*", ".foo", Exact),
        (".*", "foo", Fail),
        ("abc.def", "abcdef", Fail),
        ("abc.def", "abc.def", Exact),
        ("abc.def", "abcZdef", Fail),
        ("abc?def", "abcZdef", Exact),
        ("abc?def", "abcdef", Fail),
        ("**/foo/bar", "foo/bar", Exact),
        ("**/foo/bar", "dir/foo/bar", Exact),
        ("**/foo/bar", "dir/dir2/foo/bar", Exact),
        ("abc/**", "abc", Fail),
        ("abc/**", "abc/def", Exact),
        ("abc/**", "abc/def/ghi", Exact),
        ("**/.foo", ".foo", Exact),
        ("**/.foo", "bar.foo", Fail),
        ("a(b)c/def", "a(b)c/def", Exact),
        ("a(b)c/def", "a(b)c/xyz", Fail),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        ("a\\\\", "a\\", Exact),
        ("a\\*b", "a*b", Exact),
    ];
    for (pattern, text, want) in cases {
        let d = di(&[pattern]);
        assert_eq!(
            d.matches(text),
            *want != Fail,
            "pattern={pattern:?} text={text:?}"
        );
    }
}

#[test]
fn patternmatcher_multi_pattern_table() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        // TestWildcardMatches and friends.
        (&["*"], "fileutils.go", true),
        (&["*.go"], "fileutils.go", true),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["*.go"], ".", false),
        (&[], "/any/path/there", false),
        // Last match wins; parents count.
        (&["docs", "!docs/README.md"], "docs/other.md", true),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "README-secret.md",
            true,
        ),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "README.md",
            false,
        ),
        (&["node_modules"], "node_modules/a/b/c.js", true),
        (&["*.log"], "sub/x.log", false),
        (&["**/*.log"], "sub/x.log", true),
    ];
    for (patterns, text, want) in cases {
        assert_eq!(di(patterns).matches(text), *want, "{patterns:?} {text:?}");
    }
}

#[test]
fn go_filepath_match_through_patterns() {
    // patternmatcher TestMatch (Go's filepath.Match tests) through a single pattern.
    let ok: &[(&str, &str, bool)] = &[
        ("abc", "abc", true),
        ("*", "abc", true),
        ("*c", "abc", true),
        ("a*", "a", true),
        ("a*", "abc", true),
        ("a*", "ab/c", true), // the parent "ab" matches
        ("a*/b", "abc/b", true),
        ("a*/b", "a/c/b", false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true),
        ("a*b?c*x", "abxbbxdbxebxczzy", false),
        ("ab[c]", "abc", true),
        ("ab[b-d]", "abc", true),
        ("ab[e-g]", "abc", false),
        ("ab[^c]", "abc", false),
        ("ab[^b-d]", "abc", false),
        ("ab[^e-g]", "abc", true),
        ("a\\*b", "a*b", true),
        ("a\\*b", "ab", false),
        ("a?b", "a☺b", true),
        ("a[^a]b", "a☺b", true),
        ("a???b", "a☺b", false),
        ("a[^a][^a][^a]b", "a☺b", false),
        ("[a-ζ]*", "α", true),
        ("*[a-ζ]", "A", false),
        ("a?b", "a/b", false),
        ("a*b", "a/b", false),
        ("[\\]a]", "]", true),
        ("[\\-]", "-", true),
        ("[x\\-]", "x", true),
        ("[x\\-]", "-", true),
        ("[x\\-]", "z", false),
        ("[\\-x]", "x", true),
        ("[\\-x]", "-", true),
        ("[\\-x]", "a", false),
        ("*x", "xxx", true),
    ];
    for (p, s, want) in ok {
        assert_eq!(di(&[p]).matches(s), *want, "{p:?} {s:?}");
    }
    for bad in [
        "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "x/a[b",
    ] {
        let e = DockerIgnore::parse(bad).unwrap_err();
        assert!(
            matches!(e.kind, DockerIgnoreErrorKind::BadPattern(_)),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn ignorefile_read_all() {
    // moby/patternmatcher ignorefile TestReadAll.
    let d = DockerIgnore::parse(
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n",
    )
    .unwrap();
    let got: Vec<(String, bool)> = d
        .patterns()
        .iter()
        .map(|p| (p.pattern().to_owned(), p.is_exception()))
        .collect();
    assert_eq!(
        got,
        [
            ("test1".into(), false),
            ("test2".into(), false),
            ("a/file/here".into(), false),
            ("lastfile".into(), false),
            ("inverted/abs/path".into(), true),
        ]
    );
    assert_eq!(d.patterns()[4].line(), 7);
    let e = DockerIgnore::parse("ok\n!\n").unwrap_err();
    assert_eq!(
        (e.line, e.kind.clone()),
        (2, DockerIgnoreErrorKind::LoneExclamation)
    );
    assert_eq!(e.to_string(), "line 2: illegal exclusion pattern: \"!\"");
    assert!(DockerIgnore::parse("! ").is_err());
}

#[test]
fn cleaning_and_comments() {
    let d = DockerIgnore::parse(
        "\u{feff}# comment\n  ./build/  \n /abs//path/./x\n  # indented is a pattern\nfoo/../bar\n\n",
    )
    .unwrap();
    let pats: Vec<&str> = d.patterns().iter().map(|p| p.pattern()).collect();
    assert_eq!(
        pats,
        ["build", "abs/path/x", "# indented is a pattern", "bar"]
    );
    assert!(d.matches("build"));
    assert!(d.matches("./build/out/bin"));
    assert!(d.matches("/build/x"));
    assert!(d.matches("abs/path/x/y"));
    assert!(!d.matches("foo"));
    assert!(d.matches("bar"));
    assert!(!d.matches("."));
    assert!(!d.matches(""));
    assert!(!d.matches("/"));
    assert!(!d.is_empty());
    assert!(!d.has_exceptions());
    assert!(DockerIgnore::parse("").unwrap().is_empty());
}

#[test]
fn dockerignore_reference_example() {
    // The example of the Dockerfile reference.
    let d = DockerIgnore::parse("# comment\n*/temp*\n*/*/temp*\ntemp?\n").unwrap();
    assert!(d.matches("somedir/temporary.txt"));
    assert!(d.matches("somedir/temp"));
    assert!(d.matches("somedir/subdir/temporary.txt"));
    assert!(d.matches("tempa"));
    assert!(d.matches("tempb"));
    assert!(!d.matches("temp"));
    assert!(!d.matches("a/b/c/temp"));
    let d = DockerIgnore::parse("*.md\n!README*.md\nREADME-secret.md\n").unwrap();
    assert!(d.matches("CHANGES.md"));
    assert!(!d.matches("README.md"));
    assert!(d.matches("README-secret.md"));
    let d = DockerIgnore::parse("*.md\nREADME-secret.md\n!README*.md\n").unwrap();
    assert!(!d.matches("README-secret.md"));
}

#[test]
fn excluding_directories_entirely() {
    let d = di(&[
        "node_modules",
        "build",
        "!build/keep.txt",
        "docs/**",
        "!docs/**/*.md",
        "*.tmp",
    ]);
    assert!(d.excludes_dir_entirely("node_modules"));
    assert!(d.excludes_dir_entirely("node_modules/pkg"));
    assert!(
        !d.excludes_dir_entirely("build"),
        "an exception lives beneath"
    );
    assert!(
        !d.excludes_dir_entirely("docs"),
        "`**` exceptions may match anywhere beneath"
    );
    assert!(d.excludes_dir_entirely("docs") == d.excludes_dir_entirely("docs/api"));
    let any = di(&["tmp", "!**/keep"]);
    assert!(!any.excludes_dir_entirely("tmp"));
    assert!(!d.excludes_dir_entirely("src"), "not excluded at all");
    assert!(d.excludes_dir_entirely("cache.tmp"));
    assert!(d.matches("build/other"));
    assert!(!d.matches("build/keep.txt"));

    let d = di(&["vendor", "!vendor/github.com/keep", "!other/x"]);
    assert!(!d.excludes_dir_entirely("vendor"));
    assert!(!d.excludes_dir_entirely("vendor/github.com"));
    assert!(
        d.excludes_dir_entirely("vendor/golang.org"),
        "the exception's path diverges"
    );
    assert!(!d.matches("vendor/github.com/keep/a.go"));
    assert!(d.matches("vendor/golang.org/x"));

    // An exception before the decisive pattern does not matter.
    let d = di(&["!logs/keep", "logs"]);
    assert!(d.excludes_dir_entirely("logs"));
    assert!(d.matches("logs/keep"));

    // Wildcard exceptions are checked per path segment.
    let d = di(&["pkgs", "!pkgs/*/README.md"]);
    assert!(!d.excludes_dir_entirely("pkgs"));
    assert!(!d.excludes_dir_entirely("pkgs/a"));
    assert!(d.excludes_dir_entirely("pkgs/a/deep"));
    assert!(!d.matches("pkgs/a/README.md"));
    assert!(d.matches("pkgs/a/deep/README.md"));
}

#[test]
fn ignore_file_lookup() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path();
    fs::create_dir_all(ctx.join("build")).unwrap();
    fs::write(ctx.join("build/Dockerfile.dev"), "FROM scratch\n").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
    assert_eq!(find_ignore_file(ctx, &ctx.join("Dockerfile")), None);
    fs::write(ctx.join(".dockerignore"), "*\n").unwrap();
    assert_eq!(
        find_ignore_file(ctx, &ctx.join("Dockerfile")),
        Some(ctx.join(".dockerignore"))
    );
    assert_eq!(
        find_ignore_file(ctx, &ctx.join("build/Dockerfile.dev")),
        Some(ctx.join(".dockerignore"))
    );
    fs::write(ctx.join("build/Dockerfile.dev.dockerignore"), "x\n").unwrap();
    assert_eq!(
        find_ignore_file(ctx, &ctx.join("build/Dockerfile.dev")),
        Some(ctx.join("build/Dockerfile.dev.dockerignore"))
    );
    fs::write(ctx.join("Dockerfile.dockerignore"), "y\n").unwrap();
    assert_eq!(
        find_ignore_file(ctx, &ctx.join("Dockerfile")),
        Some(ctx.join("Dockerfile.dockerignore"))
    );
}
