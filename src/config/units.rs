//! Durations and byte sizes as they appear in `policy.toml`: always a number
//! *with* a unit, so `timeout = "30"` can never silently mean 30 ms or 30 s.

use std::time::Duration;

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"` (and compound forms such as
/// `"1m 30s"`). A bare number is refused because its unit would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; expected a number with a unit such as \"250ms\", \"30s\", \"5m\", \"1h\"".into());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration \"{trimmed}\" has no unit; write e.g. \"{trimmed}s\" or \"{trimmed}ms\""
        ));
    }
    let duration = humantime::parse_duration(trimmed).map_err(|e| {
        format!(
            "invalid duration \"{trimmed}\" ({e}); expected e.g. \"250ms\", \"30s\", \"5m\", \"1h\""
        )
    })?;
    if duration > MAX_DURATION {
        return Err(format!(
            "duration \"{trimmed}\" is longer than the most any key takes, 366 days (\"8784h\")"
        ));
    }
    Ok(duration)
}

/// The longest duration any key takes. Far past any sensible timeout or
/// window, and far below what would overflow a deadline computed from the
/// clock (`Instant + duration` panics on overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Renders a duration back in the same unit style the file accepts.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses `"512B"`, `"64KiB"`, `"1MiB"`, `"2GiB"` (binary) and `"1KB"`,
/// `"1MB"`, `"1GB"` (decimal). A bare number is refused for the same reason
/// as durations.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let accepted = "expected a number with a unit: \"512B\", \"64KiB\", \"1MiB\", \"1GiB\" (or decimal \"KB\", \"MB\", \"GB\")";
    if digits.is_empty() {
        return Err(format!("invalid size \"{trimmed}\"; {accepted}"));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("size \"{trimmed}\" is too large"))?;
    let multiplier: u64 = match unit.trim() {
        "B" | "b" => 1,
        "KiB" | "kiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "KB" | "kB" | "kb" => 1_000,
        "MB" | "mb" => 1_000_000,
        "GB" | "gb" => 1_000_000_000,
        "" => return Err(format!("size \"{trimmed}\" has no unit; {accepted}")),
        other => {
            return Err(format!(
                "unknown size unit \"{other}\" in \"{trimmed}\"; {accepted}"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size \"{trimmed}\" is too large"))
}

/// Renders a byte count in the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, name) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{name}", bytes / size);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        // A year (humantime's 365.25 days) is taken; past 366 days is not:
        // such a deadline could overflow the clock and panic per request.
        assert!(parse_duration("1y").is_ok());
        assert_eq!(parse_duration("8784h").unwrap(), MAX_DURATION);
        for huge in ["8785h", "5000000000000000h"] {
            assert!(
                parse_duration(huge).unwrap_err().contains("366 days"),
                "{huge}"
            );
        }
    }

    #[test]
    fn sizes_binary_and_decimal() {
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("1MiB").unwrap(), 1_048_576);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_size("16KB").unwrap(), 16_000);
        assert!(parse_size("1024").unwrap_err().contains("no unit"));
        assert!(parse_size("1XB").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["250ms", "30s", "5m", "1h"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        for text in ["512B", "64KiB", "1MiB", "1GiB"] {
            assert_eq!(format_size(parse_size(text).unwrap()), text);
        }
    }
}
