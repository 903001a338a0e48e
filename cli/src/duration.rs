//! Durations the way Go writes and reads them (`5s`, `1.5ms`, `2m30s`), because etcdctl
//! users type `--command-timeout 5s` and read `took = 1.234567ms`.

use std::time::Duration;

/// Parses a Go duration: one or more decimal numbers, each with a unit among `ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`. A bare `0` is accepted.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why} (write e.g. 5s, 500ms, 1m30s)");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| bad("expected a number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit")),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad("out of range"))
}

/// Formats like Go's `time.Duration.String`: `1.234567ms`, `850µs`, `1m2.5s`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return with_fraction(nanos, 1_000, 3, "µs");
    }
    if nanos < 1_000_000_000 {
        return with_fraction(nanos, 1_000_000, 6, "ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let seconds = with_fraction(
        u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
        9,
        "s",
    );
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// `value / unit`, with the remainder as up to `digits` decimals, trailing zeros dropped.
fn with_fraction(value: u128, unit: u128, digits: usize, suffix: &str) -> String {
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return format!("{whole}{suffix}");
    }
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}{suffix}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "5", "s", "5 parsecs", "1x", "-1s"] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_nanos(999)), "999ns");
        assert_eq!(format(Duration::from_nanos(850_100)), "850.1µs");
        assert_eq!(format(Duration::from_nanos(1_234_567)), "1.234567ms");
        assert_eq!(format(Duration::from_millis(12)), "12ms");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(62_500)), "1m2.5s");
        assert_eq!(format(Duration::from_secs(7200)), "2h0m0s");
    }
}
