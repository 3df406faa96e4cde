//! Glob patterns for repository and tag filters: `*` matches within one path segment, `**`
//! across segments, `?` one character other than `/`; everything else is literal.

/// Whether `text` matches `pattern` as a whole.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    match_at(&p, &t)
}

fn match_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            (0..=t.len()).any(|i| match_at(rest, &t[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if match_at(rest, &t[i..]) {
                    return true;
                }
                if t.get(i) == Some(&'/') {
                    break;
                }
            }
            false
        }
        Some('?') => t.first().is_some_and(|c| *c != '/') && match_at(&p[1..], &t[1..]),
        Some(c) => t.first() == Some(c) && match_at(&p[1..], &t[1..]),
    }
}

/// Whether any pattern matches; an empty list matches everything.
pub fn any_matches(patterns: &[String], text: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(p, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_wildcards() {
        assert!(matches("team/*", "team/app"));
        assert!(!matches("team/*", "team/a/b"));
        assert!(matches("team/**", "team/a/b"));
        assert!(matches("**", "x/y/z"));
        assert!(matches("v1.?", "v1.2"));
        assert!(!matches("v1.?", "v1.22"));
        assert!(matches("v*", "v1.22"));
        assert!(matches("app", "app"));
        assert!(!matches("app", "apps"));
        assert!(any_matches(&[], "anything"));
        assert!(!any_matches(&["a*".into()], "b"));
    }
}
