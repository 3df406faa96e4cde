//! Variable expansion: BuildKit shell-lexer cases (envVarTest, wordsTest, ProcessWithMatches).

use std::collections::HashMap;

use dockerfile::{
    ExpandErrorKind, expand, expand_detailed, expand_words, keyword_expands_variables,
};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(word: &str, vars: &HashMap<String, String>) -> Result<String, dockerfile::ExpandError> {
    expand(word, &|k| vars.get(k).cloned(), '\\')
}

fn words(
    word: &str,
    vars: &HashMap<String, String>,
) -> Result<Vec<String>, dockerfile::ExpandError> {
    expand_words(word, &|k| vars.get(k).cloned(), '\\')
}

/// `source | expected` (expected `error` for an error), as BuildKit's envVarTest file,
/// evaluated with PWD=/home SHELL=bash KOREAN=한국어 NULL=.
const ENV_VAR_TEST: &str = r#"
hello                    |     hello
he'll'o                  |     hello
he'llo                   |     error
he\'llo                  |     he'llo
he\\'llo                 |     error
abc\tdef                 |     abctdef
"abc\tdef"               |     abc\tdef
"abc\\tdef"              |     abc\tdef
'abc\tdef'               |     abc\tdef
hello\                   |     hello
hello\\                  |     hello\
"hello                   |     error
"hello\"                 |     error
"hel'lo"                 |     hel'lo
'hello                   |     error
'hello\'                 |     hello\
'hello\there'            |     hello\there
'hello\\there'           |     hello\\there
"''"                     |     ''
$.                       |     $.
he$1x                    |     hex
he$.x                    |     he$.x
he$pwd.                  |     he.
he$PWD                   |     he/home
he\$PWD                  |     he$PWD
he\\$PWD                 |     he\/home
"he\$PWD"                |     he$PWD
"he\\$PWD"               |     he\/home
\${}                     |     ${}
\${}aaa                  |     ${}aaa
he\${}                   |     he${}
he\${}xx                 |     he${}xx
${}                      |     error
${}aaa                   |     error
he${}                    |     error
he${}xx                  |     error
he${hi}                  |     he
he${hi}xx                |     hexx
he${PWD}                 |     he/home
he${.}                   |     error
he${XXX:-000}xx          |     he000xx
he${PWD:-000}xx          |     he/homexx
he${XXX:-$PWD}xx         |     he/homexx
he${XXX:-${PWD:-yyy}}xx  |     he/homexx
he${XXX:-${YYY:-yyy}}xx  |     heyyyxx
he${XXX:YYY}             |     error
he${XXX:+${PWD}}xx       |     hexx
he${PWD:+${XXX}}xx       |     hexx
he${PWD:+${SHELL}}xx     |     hebashxx
he${XXX:+000}xx          |     hexx
he${PWD:+000}xx          |     he000xx
'he${XX}'                |     he${XX}
"he${PWD}"               |     he/home
"he'$PWD'"               |     he'/home'
"$PWD"                   |     /home
'$PWD'                   |     $PWD
'\$PWD'                  |     \$PWD
'"hello"'                |     "hello"
he\$PWD                  |     he$PWD
"he\$PWD"                |     he$PWD
'he\$PWD'                |     he\$PWD
he${PWD                  |     error
he${PWD:=000}xx          |     error
he${PWD:+${PWD}:}xx      |     he/home:xx
he${XXX:-\$PWD:}xx       |     he$PWD:xx
he${XXX:-\${PWD}z}xx     |     he${PWDz}xx
안녕하세요                 |     안녕하세요
안'녕'하세요               |     안녕하세요
안'녕하세요                |     error
안녕\'하세요               |     안녕'하세요
안\\'녕하세요              |     error
안녕\t하세요               |     안녕t하세요
"안녕\t하세요"             |     안녕\t하세요
'안녕\t하세요              |     error
안녕하세요\                |     안녕하세요
안녕하세요\\               |     안녕하세요\
"안녕하세요                |     error
"안녕하세요\"              |     error
"안녕'하세요"              |     안녕'하세요
'안녕하세요                |     error
'안녕하세요\'              |     안녕하세요\
안녕$1x                    |     안녕x
안녕$.x                    |     안녕$.x
안녕$pwd.                  |     안녕.
안녕$PWD                   |     안녕/home
안녕\$PWD                  |     안녕$PWD
안녕\\$PWD                 |     안녕\/home
안녕\${}                   |     안녕${}
안녕\${}xx                 |     안녕${}xx
안녕${}                    |     error
안녕${}xx                  |     error
안녕${hi}                  |     안녕
안녕${hi}xx                |     안녕xx
안녕${PWD}                 |     안녕/home
안녕${.}                   |     error
안녕${XXX:-000}xx          |     안녕000xx
안녕${PWD:-000}xx          |     안녕/homexx
안녕${XXX:-$PWD}xx         |     안녕/homexx
안녕${XXX:-${PWD:-yyy}}xx  |     안녕/homexx
안녕${XXX:-${YYY:-yyy}}xx  |     안녕yyyxx
안녕${XXX:YYY}             |     error
안녕${XXX:+${PWD}}xx       |     안녕xx
안녕${PWD:+${XXX}}xx       |     안녕xx
안녕${PWD:+${SHELL}}xx     |     안녕bashxx
안녕${XXX:+000}xx          |     안녕xx
안녕${PWD:+000}xx          |     안녕000xx
'안녕${XX}'                |     안녕${XX}
"안녕${PWD}"               |     안녕/home
"안녕'$PWD'"               |     안녕'/home'
'"안녕"'                   |     "안녕"
안녕\$PWD                  |     안녕$PWD
"안녕\$PWD"                |     안녕$PWD
'안녕\$PWD'                |     안녕\$PWD
안녕${PWD                  |     error
안녕${PWD:=000}xx          |     error
안녕${PWD:+${PWD}:}xx      |     안녕/home:xx
안녕${XXX:-\$PWD:}xx       |     안녕$PWD:xx
안녕${XXX:-\${PWD}z}xx     |     안녕${PWDz}xx
$KOREAN                    |     한국어
안녕$KOREAN                |     안녕한국어
${{aaa}                   |     error
${aaa}}                   |     }
${aaa                     |     error
${{aaa:-bbb}              |     error
${aaa:-bbb}}              |     bbb}
${aaa:-bbb                |     error
${aaa:-bbb}               |     bbb
${aaa:-${bbb:-ccc}}       |     ccc
${aaa:-bbb ${foo}         |     error
${aaa:-bbb {foo}          |     bbb {foo
${:}                      |     error
${:-bbb}                  |     error
${:+bbb}                  |     error
${NULL:-x}                |     x
${NULL-x}                 |
${NULL:+x}                |
${NULL+x}                 |     x
$1                        |
${1}                      |
${1:+bbb}                 |
${1:-bbb}                 |     bbb
$999aaa                   |     aaa
${999}aaa                 |     aaa
${999:+bbb}aaa            |     aaa
${999:-bbb}aaa            |     bbbaaa
$001aaa                   |     aaa
${001:-bbb}aaa            |     bbbaaa
$@                        |
${@}                      |
${@:-bbb}                 |     bbb
$@@@                      |     @@
$@aaa                     |     aaa
${@:+bbb}aaa              |     aaa
$*                        |
${*:-bbb}                 |     bbb
$#                        |
${#}                      |
${#:-bbb}                 |     bbb
$?                        |
${?:-bbb}                 |     bbb
$-                        |
${-:-bbb}                 |     bbb
$$                        |
${$:-bbb}                 |     bbb
$!                        |
${!:-bbb}                 |     bbb
$0                        |
${0}                      |
${0:+bbb}                 |
${0:-bbb}                 |     bbb
"#;

#[test]
fn env_var_test_table() {
    let vars = env(&[
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]);
    let mut count = 0;
    for (n, line) in ENV_VAR_TEST.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (src, want) = line.split_once('|').expect("a | separator");
        let (src, want) = (src.trim(), want.trim());
        let got = run(src, &vars);
        if want == "error" {
            assert!(got.is_err(), "line {n}: {src:?} should fail, got {got:?}");
        } else {
            assert_eq!(got.as_deref(), Ok(want), "line {n}: {src:?}");
        }
        count += 1;
    }
    assert_eq!(count, 170);
}

#[test]
fn process_with_matches_cases() {
    // BuildKit lex_test.go TestProcessWithMatches: (input, env, expected or None for error).
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case] = &[
        ("x", &[("DUMMY", "dummy")], Some("x")),
        ("x ${UNUSED}", &[("DUMMY", "dummy")], Some("x ")),
        ("x ${FOO}", &[("FOO", "y")], Some("x y")),
        (
            "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx  ccc"),
        ),
        (
            "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx bbb ccc"),
        ),
        ("${FOO:-}", &[("FOO", "xxx"), ("BAR", "")], Some("xxx")),
        ("${FOO:-}", &[], Some("")),
        (
            "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("aaa bbb "),
        ),
        (
            "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("aaa  "),
        ),
        ("${FOO?aaa}", &[("FOO", "xxx"), ("BAR", "")], Some("xxx")),
        ("${BAR?bbb}", &[("FOO", "xxx"), ("BAR", "")], Some("")),
        ("${BAZ?ccc}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${FOO:?aaa}", &[("FOO", "xxx"), ("BAR", "")], Some("xxx")),
        ("${BAR:?bbb}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${BAZ:?ccc}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${BAZ:?}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${FOO=aaa}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${FOO=:aaa}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${FOO=}", &[], None),
        (
            r"${FOO#()[]{\}^$.\*\?|\\}",
            &[("FOO", r"()[]{}^$.*?|\x")],
            Some("x"),
        ),
        (r"${FOO%%\**}", &[("FOO", "xx**")], Some("xx")),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y")),
        ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy")),
        ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], Some("xyy")),
        ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Some("xxyy")),
        ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy")),
        ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy")),
        ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy")),
        (r"${FOO#?\?}", &[("FOO", "???y")], Some("?y")),
        (
            "${ABC:-.}${FOO%x}${ABC:-.}",
            &[("FOO", "xxyy")],
            Some(".xxyy."),
        ),
        (r"${FOO%%\**\*}", &[("FOO", "a***yy*")], Some("a")),
        ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy")),
        (
            "${FOO%%$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
        ),
        ("${FOO%y}", &[("FOO", "xxyy")], Some("xxy")),
        ("${FOO%%y*}", &[("FOO", "xxyy")], Some("xx")),
        ("${FOO%y*}", &[("FOO", "xxyy")], Some("xxy")),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "/a/foo/b/c.txt"),
                ("NEEDLE", "/?/"),
                ("REPLACEMENT", "/"),
            ],
            Some("/foo/b/c.txt - /foo/c.txt"),
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "http://google.de"),
                ("NEEDLE", "http://"),
                ("REPLACEMENT", "https://"),
            ],
            Some("https://google.de"),
        ),
        (
            r"${FOO//\//\/}",
            &[("FOO", "/tmp/foo.txt")],
            Some(r"\/tmp\/foo.txt"),
        ),
        (
            "${FOO/$BAR/ww}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("wwxxyy"),
        ),
        ("${FOO//ww}", &[("FOO", "xxyy")], None),
        ("${FOO//}", &[("FOO", "xxyy")], None),
        ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy")),
        ("${FOO///}", &[], Some("")),
        ("${FOO//x/y}", &[("FOO", "xxyy")], Some("yyyy")),
        ("${FOO/x*/z}", &[("FOO", "axxb")], Some("az")),
        (r"${FOO#\x}", &[("FOO", "xx")], None),
    ];
    for (input, vars, want) in cases {
        let vars = env(vars);
        let got = run(input, &vars);
        match want {
            Some(w) => assert_eq!(got.as_deref(), Ok(*w), "{input:?}"),
            None => assert!(got.is_err(), "{input:?} should fail, got {got:?}"),
        }
    }
}

#[test]
fn release_file_name_with_platform_args() {
    // BuildKit lex_test.go TestProcessWithMatchesPlatform.
    let release =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let vars = env(&[
        ("VERSION", "v1.2.3"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "arm"),
        ("TARGETVARIANT", "v7"),
    ]);
    assert_eq!(
        run(release, &vars).unwrap(),
        "something-v1.2.3.linux-arm-v7.tar.gz"
    );
    let vars = env(&[
        ("VERSION", "v1.2.3"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "amd64"),
    ]);
    assert_eq!(
        run(release, &vars).unwrap(),
        "something-v1.2.3.linux-amd64.tar.gz"
    );
    let vars = env(&[
        ("VERSION", "v1.2.3"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "amd64"),
        ("TARGETVARIANT", ""),
    ]);
    assert_eq!(
        run(release, &vars).unwrap(),
        "something-v1.2.3.linux-amd64.tar.gz"
    );
}

#[test]
fn mandatory_variables() {
    // BuildKit lex_test.go TestShellParserMandatoryEnvVars.
    let set = env(&[("VAR", "plain"), ("ARG", "x")]);
    let empty = env(&[("VAR", ""), ("ARG", "x")]);
    let unset = env(&[("ARG", "x")]);
    let no_empty = "${VAR:?message here$ARG}";
    let no_unset = "${VAR?message here$ARG}";
    assert_eq!(run(no_empty, &set).unwrap(), "plain");
    let e = run(no_empty, &empty).unwrap_err();
    assert!(e.to_string().contains("message herex"), "{e}");
    assert!(
        run(no_empty, &unset)
            .unwrap_err()
            .to_string()
            .contains("message herex")
    );
    assert_eq!(run(no_unset, &set).unwrap(), "plain");
    assert_eq!(run(no_unset, &empty).unwrap(), "");
    let e = run(no_unset, &unset).unwrap_err();
    assert_eq!(
        e.kind,
        ExpandErrorKind::Required {
            name: "VAR".into(),
            message: "message herex".into()
        }
    );
    assert_eq!(
        run("${VAR:?}", &empty).unwrap_err().kind,
        ExpandErrorKind::Required {
            name: "VAR".into(),
            message: "is not allowed to be empty".into()
        }
    );
    assert_eq!(
        run("${VAR?}", &unset).unwrap_err().kind,
        ExpandErrorKind::Required {
            name: "VAR".into(),
            message: "is not allowed to be unset".into()
        }
    );
}

#[test]
fn words_splitting() {
    // In the style of BuildKit's wordsTest: (input, env, words).
    let vars = env(&[
        ("hi", "hi"),
        ("space", "abc  def"),
        ("leading", "  ab c"),
        ("trailing", "ab c   "),
        ("tab", "  ab \t c"),
    ]);
    let cases: &[(&str, &[&str])] = &[
        ("hello", &["hello"]),
        ("hello${hi}bye", &["hellohibye"]),
        ("hello${space}bye", &["helloabc", "defbye"]),
        ("hello\"${space}\"bye", &["helloabc  defbye"]),
        ("hello \"${space}\"bye", &["hello", "abc  defbye"]),
        ("hello${leading}def", &["hello", "ab", "cdef"]),
        ("hello\"${leading}\" def", &["hello  ab c", "def"]),
        ("hello\"${leading}\"", &["hello  ab c"]),
        ("hello${leading}", &["hello", "ab", "c"]),
        ("hello${trailing}", &["helloab", "c"]),
        ("hello${trailing}d", &["helloab", "c", "d"]),
        ("hello\"${trailing}\"d", &["helloab c   d"]),
        ("hello${tab}", &["hello", "ab", "c"]),
        ("hello\\ world", &["hello world"]),
        ("hello\\\\world", &["hello\\world"]),
        ("hello'world'", &["helloworld"]),
        ("'hello world' x", &["hello world", "x"]),
        ("a \"\" b", &["a", "b"]),
        ("  80/tcp   443  ", &["80/tcp", "443"]),
        ("${undefined} x", &["x"]),
    ];
    for (input, want) in cases {
        assert_eq!(words(input, &vars).unwrap(), *want, "{input:?}");
    }
}

#[test]
fn backtick_escape() {
    let vars = env(&[("X", "1")]);
    let e = |w: &str| expand(w, &|k| vars.get(k).cloned(), '`').unwrap();
    assert_eq!(e("c:\\dir\\$X"), "c:\\dir\\1");
    assert_eq!(e("`$X"), "$X");
    assert_eq!(e("\"a`\"b\""), "a\"b");
    assert_eq!(e("a` b"), "a b");
}

#[test]
fn detailed_reports_used_and_unset() {
    let vars = env(&[("A", "1")]);
    let d = expand_detailed("$A ${B:-x} ${A}", &|k| vars.get(k).cloned(), '\\').unwrap();
    assert_eq!(d.value, "1 x 1");
    assert_eq!(d.words, ["1", "x", "1"]);
    assert_eq!(d.used.iter().collect::<Vec<_>>(), ["A"]);
    assert_eq!(d.unset.iter().collect::<Vec<_>>(), ["B"]);
}

#[test]
fn error_messages() {
    let none = HashMap::new();
    let e = run("he${PWD", &none).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to process \"he${PWD\": unsupported modifier (\u{FFFD}) in substitution"
    );
    assert_eq!(
        run("${}", &none).unwrap_err().kind,
        ExpandErrorKind::BadSubstitution
    );
    assert_eq!(
        run("${a:-b", &none).unwrap_err().kind,
        ExpandErrorKind::MissingBrace
    );
    assert_eq!(
        run("'x", &none).unwrap_err().kind,
        ExpandErrorKind::UnterminatedSingleQuote
    );
    assert_eq!(
        run("\"x", &none).unwrap_err().kind,
        ExpandErrorKind::UnterminatedDoubleQuote
    );
    assert_eq!(
        run("${a/b", &none).unwrap_err().kind,
        ExpandErrorKind::MissingSlash
    );
    assert!(matches!(
        run("${a:=b}", &none).unwrap_err().kind,
        ExpandErrorKind::UnsupportedModifier(m) if m == ":="
    ));
}

#[test]
fn which_instructions_expand() {
    for k in [
        "ADD",
        "COPY",
        "ENV",
        "EXPOSE",
        "FROM",
        "LABEL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
        "ARG",
        "workdir",
    ] {
        assert!(keyword_expands_variables(k), "{k}");
    }
    for k in [
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "HEALTHCHECK",
        "ONBUILD",
        "MAINTAINER",
    ] {
        assert!(!keyword_expands_variables(k), "{k}");
    }
}

#[test]
fn hostile_inputs_stay_bounded() {
    let deep = "${a:-".repeat(100_000);
    assert_eq!(
        run(&deep, &HashMap::new()).unwrap_err().kind,
        ExpandErrorKind::TooDeep
    );
    let nested_ok = format!("{}x{}", "${a:-".repeat(100), "}".repeat(100));
    assert_eq!(run(&nested_ok, &HashMap::new()).unwrap(), "x");
    // Long values and patterns finish quickly (linear-time matching).
    let long = "ab".repeat(20_000);
    let vars = env(&[("V", &long)]);
    assert_eq!(run("${V//a/}", &vars).unwrap(), "b".repeat(20_000));
    assert_eq!(run("${V##*b}", &vars).unwrap(), "");
    assert_eq!(run("${V%%a*}", &vars).unwrap(), "");
    assert_eq!(run("${V/*a*a*a*c/x}", &vars).unwrap(), long);
}
