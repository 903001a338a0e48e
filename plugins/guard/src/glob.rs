//! Key patterns: `*` matches any run of bytes but `/`, `**` any run at all, `?` one byte
//! but `/`; every other byte matches itself. Small, and enough for key naming rules such as
//! `/svc/*/config` or `/cfg/**.json`.

/// Whether `key` matches `pattern` as a whole.
pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
    match pattern {
        [] => key.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=key.len()).any(|i| matches(rest, &key[i..])),
        [b'*', rest @ ..] => {
            let run = key.iter().position(|&b| b == b'/').unwrap_or(key.len());
            (0..=run).any(|i| matches(rest, &key[i..]))
        }
        [b'?', rest @ ..] => matches!(key, [c, tail @ ..] if *c != b'/' && matches(rest, tail)),
        [p, rest @ ..] => matches!(key, [c, tail @ ..] if c == p && matches(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_stop_at_slashes_double_stars_do_not() {
        assert!(matches(b"/svc/*/config", b"/svc/web/config"));
        assert!(!matches(b"/svc/*/config", b"/svc/a/b/config"));
        assert!(matches(b"/svc/**/config", b"/svc/a/b/config"));
        assert!(matches(b"/ids/??", b"/ids/ab"));
        assert!(!matches(b"/ids/??", b"/ids/a"));
        assert!(matches(b"/cfg/*.json", b"/cfg/a.json"));
        assert!(!matches(b"/cfg/*.json", b"/cfg/a.yaml"));
    }
}
