//! The Prometheus text format read back into samples, for tests that scrape `/metrics`
//! (compiled for the kit's own tests and with the `testkit` feature only).
//!
//! Enough of the format for what the exporter writes: `# …` lines skipped, then
//! `name{label="value",…} number`, label values with `\"`, `\\` and `\n` escapes (a route
//! template's braces sit inside quotes, so a label section ends at the first `}` outside
//! them).

use std::collections::BTreeMap;

/// One line of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (`orderflow_backlog`, `…_bucket`, `…_count`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Every sample of `text`; an error names the line that is not a sample.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).ok_or_else(|| format!("not a sample: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (at, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[at + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    // A timestamp may follow the value; the exporter writes none, and none is needed.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of the samples named `name` that carry every label of `labels` (others may
/// differ); `None` when no sample matches — the series is not there at all.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_with_braces_escapes_and_infinity() {
        let text = "# HELP x y\n# TYPE x counter\n\
            orderflow_http_requests_total{service=\"order\",route=\"/orders/{id}\",status=\"200\"} 3\n\
            weird{a=\"q\\\"uote\\\\ and, comma\"} 1.5\n\
            h_bucket{le=\"+Inf\"} 7\nplain 0\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].labels["route"], "/orders/{id}");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].labels["a"], "q\"uote\\ and, comma");
        assert_eq!(samples[2].labels["le"], "+Inf");
        assert_eq!(
            sum(
                &samples,
                "orderflow_http_requests_total",
                &[("service", "order")]
            ),
            Some(3.0)
        );
        assert_eq!(sum(&samples, "plain", &[]), Some(0.0));
        assert_eq!(sum(&samples, "plain", &[("a", "b")]), None);
        assert!(parse("name{unterminated=\"x} 1").is_err());
    }
}
