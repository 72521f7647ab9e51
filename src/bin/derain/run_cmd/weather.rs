//! `derain run --weather-from`: the weather from the application side (a wiper state or rain
//! sensor logged from the car's bus), as lines `[SECONDS] rain|dry`, handed to the derain
//! element's `set-weather` action signal.

use std::io::BufRead;

use anyhow::{Context, Result};
use gst::prelude::*;

/// One weather line: from `at` (running time in nanoseconds; `None`: the next frame), `raining`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeatherLine {
    pub at: Option<u64>,
    pub raining: bool,
}

/// Parses a line: `rain`, `dry`, or a time in seconds followed by one of them; blank lines and
/// lines starting with `#` are `Ok(None)`. An unknown word or a bad time is an error saying so.
pub fn parse_line(line: &str) -> Result<Option<WeatherLine>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let (at, word) = match words.as_slice() {
        [word] => (None, *word),
        [t, word] => {
            let s: f64 = t
                .parse()
                .map_err(|_| format!("'{t}' is not a time in seconds"))?;
            if !(s.is_finite() && s >= 0.0) {
                return Err(format!("time {t} must be a number of seconds >= 0"));
            }
            (Some((s * 1e9).round() as u64), *word)
        }
        _ => return Err(format!("expected '[SECONDS] rain|dry', got '{line}'")),
    };
    let raining = match word.to_ascii_lowercase().as_str() {
        "rain" => true,
        "dry" => false,
        other => return Err(format!("unknown weather '{other}' (use rain or dry)")),
    };
    Ok(Some(WeatherLine { at, raining }))
}

/// Hands one line to the element (a warning for a line that is not weather: nothing changes).
fn apply(el: &gst::Element, origin: &str, n: usize, line: &str) {
    match parse_line(line) {
        Ok(Some(w)) => {
            let word = if w.raining { "rain" } else { "dry" };
            let _: bool = el.emit_by_name("set-weather", &[&word, &w.at.unwrap_or(u64::MAX)]);
        }
        Ok(None) => {}
        Err(e) => log::warn!("{origin}:{n}: {e}: ignored"),
    }
}

/// Reads the weather from `path` (`-`: standard input, line by line as it comes, on a thread of
/// its own) into the derain element. A file is read whole before the pipeline runs.
pub fn follow(el: &gst::Element, path: &str) -> Result<()> {
    if path == "-" {
        let el = el.clone();
        std::thread::Builder::new()
            .name("weather-stdin".into())
            .spawn(move || {
                for (i, line) in std::io::stdin().lock().lines().enumerate() {
                    match line {
                        Ok(l) => apply(&el, "stdin", i + 1, &l),
                        Err(e) => {
                            log::warn!("--weather-from -: {e}: no more weather read");
                            break;
                        }
                    }
                }
            })
            .context("cannot start the weather reader")?;
        return Ok(());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--weather-from: cannot read {path}"))?;
    for (i, line) in text.lines().enumerate() {
        apply(el, path, i + 1, line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_and_without_a_time() {
        assert_eq!(
            parse_line("rain"),
            Ok(Some(WeatherLine {
                at: None,
                raining: true
            }))
        );
        assert_eq!(
            parse_line(" 2.5  DRY "),
            Ok(Some(WeatherLine {
                at: Some(2_500_000_000),
                raining: false
            }))
        );
        assert_eq!(parse_line("# wipers"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
        assert!(parse_line("3 sleet").unwrap_err().contains("sleet"));
        assert!(parse_line("soon rain").unwrap_err().contains("soon"));
        assert!(parse_line("-1 rain").is_err());
        assert!(parse_line("1 rain now").is_err());
    }
}
