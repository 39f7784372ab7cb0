//! The little XML S3 needs: escaping for responses, and reading the few request bodies
//! (CompleteMultipartUpload, Delete, Tagging, VersioningConfiguration), which are flat lists
//! of simple elements. Not a general parser: no DTDs, no CDATA, no namespaces beyond ignoring
//! the `xmlns` attribute.

/// Escapes text for an element body or attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 text: S3 escapes them as numeric refs.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => {
                out.push_str(&format!("&#x{:X};", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Resolves the five named entities and numeric references.
pub fn unescape(s: &str) -> Option<String> {
    if !s.contains('&') {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';')? + i;
        let ent = &rest[i + 1..end];
        match ent {
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                out.push(char::from_u32(u32::from_str_radix(&ent[2..], 16).ok()?)?)
            }
            _ if ent.starts_with('#') => out.push(char::from_u32(ent[1..].parse().ok()?)?),
            _ => return None,
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// An element: its local name and either its text or its children.
#[derive(Debug, Default)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Parses a document into its root element; `None` when it is not well formed.
pub fn parse(doc: &str) -> Option<Element> {
    let mut p = Parser { s: doc, pos: 0 };
    p.skip_misc();
    let root = p.element(0)?;
    p.skip_misc();
    (p.pos == p.s.len()).then_some(root)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    /// Whitespace, the XML declaration, comments and processing instructions.
    fn skip_misc(&mut self) {
        loop {
            let trimmed = self.rest().trim_start();
            self.pos = self.s.len() - trimmed.len();
            if self.rest().starts_with("<?") {
                match self.rest().find("?>") {
                    Some(i) => self.pos += i + 2,
                    None => return,
                }
            } else if self.rest().starts_with("<!--") {
                match self.rest().find("-->") {
                    Some(i) => self.pos += i + 3,
                    None => return,
                }
            } else {
                return;
            }
        }
    }

    fn element(&mut self, depth: usize) -> Option<Element> {
        if depth > 16 || !self.rest().starts_with('<') {
            return None;
        }
        let close = self.rest().find('>')?;
        let tag = &self.rest()[1..close];
        self.pos += close + 1;
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let qname = tag.split_whitespace().next()?;
        let name = qname.rsplit(':').next()?.to_string();
        let mut el = Element {
            name,
            ..Default::default()
        };
        if self_closing {
            return Some(el);
        }
        let mut text = String::new();
        loop {
            let lt = self.rest().find('<')?;
            text.push_str(&self.rest()[..lt]);
            self.pos += lt;
            if self.rest().starts_with("</") {
                let end = self.rest().find('>')?;
                if self.rest()[2..end].trim() != qname {
                    return None;
                }
                self.pos += end + 1;
                break;
            } else if self.rest().starts_with("<!--") || self.rest().starts_with("<?") {
                self.skip_misc();
            } else {
                el.children.push(self.element(depth + 1)?);
            }
        }
        el.text = if el.children.is_empty() {
            unescape(&text)?
        } else {
            String::new()
        };
        Some(el)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_delete_request() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a&amp;b</Key></Object>
<Object><Key>c</Key><VersionId>v1</VersionId></Object><Quiet>true</Quiet></Delete>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "Delete");
        let keys: Vec<_> = root
            .children("Object")
            .map(|o| o.child_text("Key").unwrap())
            .collect();
        assert_eq!(keys, ["a&b", "c"]);
        assert_eq!(root.child_text("Quiet"), Some("true"));
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse("<a><b></a>").is_none());
        assert!(parse("<a>").is_none());
        assert!(parse("<a>&bogus;</a>").is_none());
    }

    #[test]
    fn escapes() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(unescape(&escape("x&y<\u{1}")).unwrap(), "x&y<\u{1}");
    }
}
