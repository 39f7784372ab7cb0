//! A reader of the Prometheus text format (0.0.4) as far as the agent's `/metrics/resource`
//! uses it: `# HELP`/`# TYPE` and other comments are skipped; each sample line is
//! `NAME{LABEL="VALUE",...} NUMBER [TIMESTAMP_MS]`, label values with `\\`, `\"` and `\n`
//! escapes.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Every sample of `text`; the error names the line that does not parse.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(sample(line).map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?);
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = read_labels(r, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "bad value")?,
    };
    let timestamp_ms = fields
        .next()
        .map(|t| t.parse::<i64>().map_err(|_| "bad timestamp"))
        .transpose()?;
    if fields.next().is_some() {
        return Err("extra fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Read `k="v",...}` into `labels`; returns what follows the closing brace.
fn read_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() {
            return Err("empty label name".into());
        }
        let mut chars = s[eq + 1..].trim_start().char_indices();
        let body = s[eq + 1..].trim_start();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key}: value not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    _ => return Err(format!("label {key}: bad escape")),
                },
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("label {key}: unterminated value"))?;
        labels.insert(key.to_string(), value);
        s = body[end..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_timestamps() {
        let text = "# HELP x_total help text\n# TYPE x_total counter\n\
            x_total{container=\"a\",namespace=\"n\",pod=\"p\\\"q\\\\\"} 1.5 1700000000123\n\
            node_memory_working_set_bytes 4096 17\nscrape_error 0\n\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].label("pod"), "p\"q\\");
        assert_eq!(s[0].label("container"), "a");
        assert_eq!(s[0].value, 1.5);
        assert_eq!(s[0].timestamp_ms, Some(1_700_000_000_123));
        assert_eq!(s[1].value, 4096.0);
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].timestamp_ms, None);
    }

    #[test]
    fn bad_lines_are_named() {
        for bad in [
            "x{a=\"b\" 1",
            "x{a=b} 1",
            "x 1 2 3",
            "x one",
            "{a=\"b\"} 1",
            "x{a=\"b\\q\"} 1",
        ] {
            let e = parse(&format!("ok 1\n{bad}\n")).unwrap_err();
            assert!(e.starts_with("line 2:"), "{bad}: {e}");
        }
    }
}
