//! Containerfile (Dockerfile) parsing: line continuations, comments, exec (JSON) and shell
//! forms, and `$VAR` / `${VAR}` / `${VAR:-default}` substitution from ARG and ENV.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    From {
        image: String,
        /// `FROM image AS name`: later stages refer to this one by name.
        alias: Option<String>,
    },
    Run {
        command: Command,
    },
    Copy {
        sources: Vec<String>,
        dest: String,
        chown: Option<String>,
        /// `--from=STAGE|IMAGE`: copy out of an earlier stage or an image, not the context.
        from: Option<String>,
        add: bool,
    },
    Env {
        vars: Vec<(String, String)>,
    },
    Arg {
        name: String,
        default: Option<String>,
    },
    Workdir {
        path: String,
    },
    User {
        user: String,
    },
    Cmd {
        command: Command,
    },
    Entrypoint {
        command: Command,
    },
    Expose {
        ports: Vec<String>,
    },
    Label {
        labels: Vec<(String, String)>,
    },
    Volume {
        paths: Vec<String>,
    },
}

/// Exec form `["a", "b"]` or shell form (run with /bin/sh -c).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

impl Command {
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// One instruction with where it came from (for errors and the cache key).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub line: usize,
    /// The instruction as written (after joining continuations), the cache key's text.
    pub text: String,
    pub instruction: Instruction,
}

/// Join continuation lines and drop comments and blank lines: (first line number, text).
fn logical_lines(src: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in src.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !current.is_empty() && trimmed.starts_with('#') {
            continue; // comments inside a continued instruction are dropped, as docker does
        }
        if current.is_empty() {
            start = i + 1;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push((start, std::mem::take(&mut current)));
            }
        }
    }
    if !current.trim().is_empty() {
        out.push((start, current));
    }
    out
}

/// Parse a whole Containerfile. `build_args` are `--build-arg` values (they override ARG
/// defaults); substitution uses ARG and ENV values seen so far.
pub fn parse(src: &str, build_args: &HashMap<String, String>) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    // ARGs declared before the first FROM: every stage starts from these (a stage's own ARG
    // and ENV values do not leak into the next one).
    let mut global_vars: Option<HashMap<String, String>> = None;
    for (line, text) in logical_lines(src) {
        let (word, rest) = match text.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (text.as_str(), ""),
        };
        let keyword = word.to_ascii_uppercase();
        let ctx = || format!("line {line}: {keyword}");
        let instruction = parse_one(&keyword, rest, &vars).with_context(ctx)?;
        match &instruction {
            Instruction::Arg { name, default } => {
                let value = build_args
                    .get(name)
                    .cloned()
                    .or_else(|| default.clone())
                    .unwrap_or_default();
                vars.insert(name.clone(), value);
            }
            Instruction::Env { vars: kvs } => {
                for (k, v) in kvs {
                    vars.insert(k.clone(), v.clone());
                }
            }
            Instruction::From { .. } => {
                vars = global_vars.get_or_insert_with(|| vars.clone()).clone();
            }
            _ => {}
        }
        if steps.is_empty()
            && !matches!(
                instruction,
                Instruction::From { .. } | Instruction::Arg { .. }
            )
        {
            bail!("line {line}: the first instruction must be FROM (or ARG), not {keyword}");
        }
        steps.push(Step {
            line,
            text: format!("{keyword} {rest}"),
            instruction,
        });
    }
    if !steps
        .iter()
        .any(|s| matches!(s.instruction, Instruction::From { .. }))
    {
        bail!("no FROM instruction");
    }
    Ok(steps)
}

fn parse_one(keyword: &str, rest: &str, vars: &HashMap<String, String>) -> Result<Instruction> {
    let sub = |s: &str| substitute(s, vars);
    Ok(match keyword {
        "FROM" => {
            let image = rest
                .split_whitespace()
                .next()
                .map(sub)
                .transpose()?
                .unwrap_or_default();
            if image.is_empty() {
                bail!("needs an image (or scratch)");
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            let alias = match words.as_slice() {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("AS") => {
                    let valid = name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                    if !valid || name.parse::<usize>().is_ok() {
                        bail!("stage name {name:?}: use letters, digits, '-', '_' and '.', not a number");
                    }
                    Some(name.to_ascii_lowercase())
                }
                _ => bail!("expects FROM IMAGE [AS NAME]"),
            };
            Instruction::From { image, alias }
        }
        "RUN" => Instruction::Run {
            command: command(rest)?,
        },
        "CMD" => Instruction::Cmd {
            command: command(rest)?,
        },
        "ENTRYPOINT" => Instruction::Entrypoint {
            command: command(rest)?,
        },
        "COPY" | "ADD" => {
            let mut words = split_words(rest)?;
            let mut chown = None;
            let mut from = None;
            while words.first().is_some_and(|w| w.starts_with("--")) {
                let flag = words.remove(0);
                match flag.split_once('=') {
                    Some(("--chown", v)) => chown = Some(sub(v)?),
                    Some(("--from", v)) if keyword == "COPY" => from = Some(sub(v)?),
                    _ => bail!("unsupported flag {flag}"),
                }
            }
            if words.len() < 2 {
                bail!("needs at least one source and a destination");
            }
            let dest = sub(&words.pop().expect("len >= 2"))?;
            let sources = words.iter().map(|w| sub(w)).collect::<Result<_>>()?;
            Instruction::Copy {
                sources,
                dest,
                chown,
                from,
                add: keyword == "ADD",
            }
        }
        "ENV" => Instruction::Env {
            vars: key_values(rest, vars, true)?,
        },
        "LABEL" => Instruction::Label {
            labels: key_values(rest, vars, false)?,
        },
        "ARG" => {
            let (name, default) = match rest.split_once('=') {
                Some((n, d)) => (n.trim().to_string(), Some(unquote(d.trim()))),
                None => (rest.trim().to_string(), None),
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                bail!("expects NAME or NAME=default");
            }
            Instruction::Arg { name, default }
        }
        "WORKDIR" => Instruction::Workdir { path: sub(rest)? },
        "USER" => Instruction::User { user: sub(rest)? },
        "EXPOSE" => Instruction::Expose {
            ports: rest.split_whitespace().map(sub).collect::<Result<_>>()?,
        },
        "VOLUME" => {
            let paths = if rest.starts_with('[') {
                json_array(rest)?
            } else {
                split_words(rest)?
            };
            Instruction::Volume {
                paths: paths.iter().map(|p| sub(p)).collect::<Result<_>>()?,
            }
        }
        other => bail!("unknown instruction {other}"),
    })
}

fn command(rest: &str) -> Result<Command> {
    if rest.is_empty() {
        bail!("needs a command");
    }
    if rest.starts_with('[') {
        if let Ok(v) = json_array(rest) {
            return Ok(Command::Exec(v));
        }
    }
    Ok(Command::Shell(rest.to_string()))
}

fn json_array(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).with_context(|| format!("{s:?} is not a JSON array of strings"))
}

/// `K=V K2="v 2"` (or the legacy `K V` for ENV).
fn key_values(
    rest: &str,
    vars: &HashMap<String, String>,
    legacy_env: bool,
) -> Result<Vec<(String, String)>> {
    let words = split_words(rest)?;
    if legacy_env && !words.first().is_some_and(|w| w.contains('=')) {
        let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        return Ok(vec![(k.to_string(), substitute(v.trim(), vars)?)]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), substitute(v, vars)?)),
            _ => bail!("{w:?} is not KEY=VALUE"),
        })
        .collect()
}

/// Split on whitespace, keeping double- or single-quoted parts together (quotes removed).
fn split_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unterminated quote in {s:?}");
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn unquote(s: &str) -> String {
    split_words(s)
        .ok()
        .and_then(|w| w.into_iter().next())
        .unwrap_or_default()
}

/// `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`; `\$` is a literal dollar.
pub fn substitute(s: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '\\' if b.get(i + 1) == Some(&'$') => {
                out.push('$');
                i += 2;
            }
            '$' if b.get(i + 1) == Some(&'{') => {
                let end = b[i..]
                    .iter()
                    .position(|c| *c == '}')
                    .map(|p| i + p)
                    .with_context(|| format!("unterminated ${{ in {s:?}"))?;
                let inner: String = b[i + 2..end].iter().collect();
                let value = if let Some((name, default)) = inner.split_once(":-") {
                    vars.get(name)
                        .filter(|v| !v.is_empty())
                        .cloned()
                        .unwrap_or_else(|| default.to_string())
                } else if let Some((name, alt)) = inner.split_once(":+") {
                    if vars.get(name).is_some_and(|v| !v.is_empty()) {
                        alt.to_string()
                    } else {
                        String::new()
                    }
                } else {
                    vars.get(&inner).cloned().unwrap_or_default()
                };
                out.push_str(&value);
                i = end + 1;
            }
            '$' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') =>
            {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                    j += 1;
                }
                let name: String = b[i + 1..j].iter().collect();
                out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
                i = j;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Vec<Instruction> {
        parse(src, &HashMap::new())
            .unwrap()
            .into_iter()
            .map(|s| s.instruction)
            .collect()
    }

    #[test]
    fn stages_and_copy_from() {
        let steps = p("ARG V=1\nFROM busybox AS Build\nENV X=$V\nFROM scratch\nCOPY --from=build /out /app\nCOPY --from=0 --chown=app /a /b\n");
        assert_eq!(
            steps[1],
            Instruction::From {
                image: "busybox".into(),
                alias: Some("build".into())
            }
        );
        assert!(matches!(&steps[4], Instruction::Copy { from: Some(f), .. } if f == "build"));
        assert!(
            matches!(&steps[5], Instruction::Copy { from: Some(f), chown: Some(c), .. } if f == "0" && c == "app")
        );
        for bad in [
            "FROM busybox AS 1\n",
            "FROM busybox AS\n",
            "FROM busybox AS a/b\n",
            "FROM a b\n",
        ] {
            assert!(parse(bad, &HashMap::new()).is_err(), "{bad}");
        }
        assert!(parse("FROM busybox\nADD --from=x a b\n", &HashMap::new()).is_err());
    }

    #[test]
    fn a_typical_file() {
        let steps = p("# comment\nARG BASE=busybox\nFROM $BASE\nENV A=1 B=\"two words\"\nRUN echo $A && \\\n    echo done\nCOPY --chown=1000:1000 a b /dst/\nCMD [\"sh\", \"-c\", \"echo hi\"]\nENTRYPOINT /bin/sh\nLABEL x=y\nEXPOSE 80/tcp\nVOLUME [\"/data\"]\nWORKDIR /w\nUSER yun\n");
        assert_eq!(
            steps[1],
            Instruction::From {
                image: "busybox".into(),
                alias: None,
            }
        );
        assert_eq!(
            steps[2],
            Instruction::Env {
                vars: vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
            }
        );
        assert_eq!(
            steps[3],
            Instruction::Run {
                command: Command::Shell("echo $A &&  echo done".into())
            }
        );
        assert_eq!(
            steps[4],
            Instruction::Copy {
                sources: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
                chown: Some("1000:1000".into()),
                from: None,
                add: false
            }
        );
        assert_eq!(
            steps[5],
            Instruction::Cmd {
                command: Command::Exec(vec!["sh".into(), "-c".into(), "echo hi".into()])
            }
        );
        assert_eq!(
            steps[6],
            Instruction::Entrypoint {
                command: Command::Shell("/bin/sh".into())
            }
        );
        assert_eq!(
            steps[9],
            Instruction::Volume {
                paths: vec!["/data".into()]
            }
        );
    }

    #[test]
    fn build_args_override_defaults() {
        let mut args = HashMap::new();
        args.insert("V".to_string(), "2".to_string());
        let steps = parse("FROM scratch\nARG V=1\nENV X=${V}-${MISSING:-d}\n", &args).unwrap();
        assert_eq!(
            steps[2].instruction,
            Instruction::Env {
                vars: vec![("X".into(), "2-d".into())]
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = format!(
            "{:#}",
            parse("FROM busybox\nFROB x\n", &HashMap::new()).unwrap_err()
        );
        assert!(
            e.contains("line 2") && e.contains("unknown instruction FROB"),
            "{e}"
        );
        let e = format!("{:#}", parse("RUN true\n", &HashMap::new()).unwrap_err());
        assert!(e.contains("first instruction must be FROM"), "{e}");
        let e = format!(
            "{:#}",
            parse("FROM busybox\nCOPY onlyone\n", &HashMap::new()).unwrap_err()
        );
        assert!(e.contains("line 2: COPY"), "{e}");
    }

    #[test]
    fn substitution() {
        let mut v = HashMap::new();
        v.insert("A".to_string(), "x".to_string());
        assert_eq!(
            substitute("$A/${A}/\\$A/${B:-b}/${A:+y}", &v).unwrap(),
            "x/x/$A/b/y"
        );
    }
}
