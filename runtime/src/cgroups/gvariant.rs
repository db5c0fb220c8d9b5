//! Values of `org.systemd.property.<Name>` annotations: GVariant's text
//! format (the one `busctl`, `gdbus` and runc's D-Bus library read), as
//! far as systemd's unit properties need it.
//!
//! | text | type |
//! | --- | --- |
//! | `true`, `false` | `b` |
//! | `42`, `0x2a`, `052` (octal) | `i` unless the context says otherwise |
//! | `1.5`, `1e3` | `d` |
//! | `'text'`, `"text"` (with `\n`, `\t`, `\uXXXX`… escapes) | `s` (or `o`, `g`) |
//! | `b'bytes'` | `ay` |
//! | `[a, b, …]` | an array of the elements' common type |
//! | `<value>` | a variant |
//! | `uint64 5`, `int16 5`, `byte 5`, `double 5`, `objectpath '/x'`, `signature 's'`… | the named type |
//! | `@t 5`, `@as []` | the type given by its signature |
//!
//! Untyped numbers in an array take the type the other elements force
//! (`[1, uint64 2]` is `at`), and an array whose type nothing fixes (`[]`)
//! is refused, as in runc. Dictionaries and tuples are not accepted.

use std::fmt;

/// A parsed, typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Gv {
    Byte(u8),
    Bool(bool),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    ObjPath(String),
    Sig(String),
    /// The element signature and the elements.
    Array(String, Vec<Gv>),
    Variant(Box<Gv>),
}

impl Gv {
    /// The D-Bus signature of the value.
    pub fn signature(&self) -> String {
        match self {
            Gv::Byte(_) => "y".into(),
            Gv::Bool(_) => "b".into(),
            Gv::I16(_) => "n".into(),
            Gv::U16(_) => "q".into(),
            Gv::I32(_) => "i".into(),
            Gv::U32(_) => "u".into(),
            Gv::I64(_) => "x".into(),
            Gv::U64(_) => "t".into(),
            Gv::F64(_) => "d".into(),
            Gv::Str(_) => "s".into(),
            Gv::ObjPath(_) => "o".into(),
            Gv::Sig(_) => "g".into(),
            Gv::Array(elem, _) => format!("a{elem}"),
            Gv::Variant(_) => "v".into(),
        }
    }
}

impl Eq for Gv {}

/// Why a text is not a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Parses a whole text as one value.
pub fn parse(text: &str) -> Result<Gv, ParseError> {
    let tokens = lex(text)?;
    let mut p = Parser { tokens, at: 0 };
    let node = p.node(0)?;
    if p.at != p.tokens.len() {
        return err(format!("unexpected {:?} after the value", p.tokens[p.at]));
    }
    let sig = node.infer()?;
    node.value(&sig)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(String),
    Str(String),
    Bytes(Vec<u8>),
    Bool(bool),
    /// A type keyword, as its signature.
    Type(String),
    Open,
    Close,
    VOpen,
    VClose,
    Comma,
}

const KEYWORDS: &[(&str, &str)] = &[
    ("boolean", "b"),
    ("byte", "y"),
    ("int16", "n"),
    ("uint16", "q"),
    ("int32", "i"),
    ("uint32", "u"),
    ("int64", "x"),
    ("uint64", "t"),
    ("double", "d"),
    ("string", "s"),
    ("objectpath", "o"),
    ("signature", "g"),
];

fn lex(text: &str) -> Result<Vec<Tok>, ParseError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'[' => (out.push(Tok::Open), i += 1).1,
            b']' => (out.push(Tok::Close), i += 1).1,
            b'<' => (out.push(Tok::VOpen), i += 1).1,
            b'>' => (out.push(Tok::VClose), i += 1).1,
            b',' => (out.push(Tok::Comma), i += 1).1,
            b'{' | b'}' | b'(' | b')' => {
                return err("dictionaries and tuples are not supported");
            }
            b'\'' | b'"' => {
                let (s, next) = quoted(text, i)?;
                out.push(Tok::Str(s));
                i = next;
            }
            b'b' if matches!(b.get(i + 1), Some(b'\'' | b'"')) => {
                let (s, next) = quoted(text, i + 1)?;
                out.push(Tok::Bytes(s.into_bytes()));
                i = next;
            }
            b'@' => {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && !b" \t\n\r[]<>,".contains(&b[end]) {
                    end += 1;
                }
                let sig = &text[start..end];
                if sig.is_empty() || !valid_signature(sig) {
                    return err(format!("invalid type annotation @{sig}"));
                }
                out.push(Tok::Type(sig.to_string()));
                i = end;
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"+-.".contains(&b[i])) {
                    i += 1;
                }
                out.push(Tok::Num(text[start..i].to_string()));
            }
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let word = &text[start..i];
                match word {
                    "true" => out.push(Tok::Bool(true)),
                    "false" => out.push(Tok::Bool(false)),
                    w => match KEYWORDS.iter().find(|(k, _)| *k == w) {
                        Some((_, sig)) => out.push(Tok::Type((*sig).to_string())),
                        None => return err(format!("unknown word {w:?}")),
                    },
                }
            }
            _ => return err(format!("unexpected character {:?}", c as char)),
        }
    }
    Ok(out)
}

/// The string quoted at `at` (which holds the quote), and where it ends.
fn quoted(text: &str, at: usize) -> Result<(String, usize), ParseError> {
    let quote = text.as_bytes()[at] as char;
    let mut out = String::new();
    let mut chars = text[at + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        if c == quote {
            return Ok((out, at + 1 + off + 1));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else { break };
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\n' => {}
            'u' | 'U' => {
                let n = if e == 'u' { 4 } else { 8 };
                let hex: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
                let ch = (hex.len() == n)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32);
                match ch {
                    Some(ch) => out.push(ch),
                    None => return err(format!("bad unicode escape \\{e}{hex}")),
                }
            }
            other => out.push(other),
        }
    }
    err("unterminated string")
}

/// Whether `sig` is one complete type this module can make.
fn valid_signature(sig: &str) -> bool {
    fn one(s: &[u8]) -> Option<usize> {
        match s.first()? {
            b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b's' | b'o' | b'g'
            | b'v' => Some(1),
            b'a' => one(&s[1..]).map(|n| n + 1),
            _ => None,
        }
    }
    one(sig.as_bytes()) == Some(sig.len())
}

const NUMERIC: &[&str] = &["y", "n", "q", "i", "u", "x", "t", "d"];

#[derive(Debug)]
enum Node {
    /// A number's text and the type it was given, if any.
    Num(String, Option<String>),
    Str(String, Option<String>),
    Bytes(Vec<u8>),
    Bool(bool),
    /// The elements and the array's type, if it was given.
    Array(Vec<Node>, Option<String>),
    Variant(Box<Node>),
}

impl Node {
    /// The signatures the node can take.
    fn sigs(&self) -> Vec<String> {
        match self {
            Node::Num(_, Some(s)) | Node::Str(_, Some(s)) | Node::Array(_, Some(s)) => {
                vec![s.clone()]
            }
            Node::Num(t, None) if is_float(t) => vec!["d".into()],
            Node::Num(_, None) => NUMERIC.iter().map(|s| s.to_string()).collect(),
            Node::Str(_, None) => vec!["s".into(), "o".into(), "g".into()],
            Node::Bytes(_) => vec!["ay".into()],
            Node::Bool(_) => vec!["b".into()],
            Node::Variant(_) => vec!["v".into()],
            Node::Array(items, None) => {
                let mut set: Option<Vec<String>> = None;
                for item in items {
                    let s: Vec<String> = item.sigs().iter().map(|s| format!("a{s}")).collect();
                    if s.is_empty() {
                        continue; // an untyped `[]` fits any array type
                    }
                    set = Some(match set {
                        None => s,
                        Some(prev) => prev.into_iter().filter(|p| s.contains(p)).collect(),
                    });
                }
                set.unwrap_or_default()
            }
        }
    }

    /// The one type the node has on its own: its only signature, else the
    /// default (`i` or `d` for numbers, `s` for strings).
    fn infer(&self) -> Result<String, ParseError> {
        let sigs = self.sigs();
        if sigs.len() == 1 {
            return Ok(sigs[0].clone());
        }
        match self {
            Node::Num(t, _) => Ok(if is_float(t) { "d" } else { "i" }.into()),
            Node::Str(..) => Ok("s".into()),
            Node::Array(items, _) if !sigs.is_empty() => {
                // The first element's own type, if the array can take it.
                for item in items {
                    if let Ok(s) = item.infer() {
                        let a = format!("a{s}");
                        if sigs.contains(&a) {
                            return Ok(a);
                        }
                    }
                }
                err("cannot tell the type of the array's elements")
            }
            Node::Array(..) => err("cannot tell the type of an array whose elements disagree or that is empty (give one, as in @as [])"),
            _ => err("cannot tell the value's type"),
        }
    }

    fn value(&self, sig: &str) -> Result<Gv, ParseError> {
        if !self.sigs().iter().any(|s| s == sig)
            && !matches!(self, Node::Array(v, None) if v.is_empty())
        {
            return err(format!("a value of type {sig:?} cannot be written {self}"));
        }
        match self {
            Node::Num(t, _) => number(t, sig),
            Node::Str(s, _) => Ok(match sig {
                "o" => Gv::ObjPath(s.clone()),
                "g" => Gv::Sig(s.clone()),
                _ => Gv::Str(s.clone()),
            }),
            Node::Bytes(b) => Ok(Gv::Array(
                "y".into(),
                b.iter().copied().map(Gv::Byte).collect(),
            )),
            Node::Bool(b) => Ok(Gv::Bool(*b)),
            Node::Variant(inner) => {
                let s = inner.infer()?;
                Ok(Gv::Variant(Box::new(inner.value(&s)?)))
            }
            Node::Array(items, _) => {
                let Some(elem) = sig.strip_prefix('a') else {
                    return err(format!("an array cannot be of type {sig:?}"));
                };
                let items = items
                    .iter()
                    .map(|n| n.value(elem))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Gv::Array(elem.to_string(), items))
            }
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Num(t, _) => f.write_str(t),
            Node::Str(s, _) => write!(f, "{s:?}"),
            Node::Bytes(b) => write!(f, "b{:?}", String::from_utf8_lossy(b)),
            Node::Bool(b) => write!(f, "{b}"),
            Node::Variant(n) => write!(f, "<{n}>"),
            Node::Array(items, _) => {
                f.write_str("[")?;
                for (i, n) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n}")?;
                }
                f.write_str("]")
            }
        }
    }
}

fn is_float(t: &str) -> bool {
    !t.starts_with("0x") && !t.starts_with("-0x") && t.contains(['.', 'e', 'E'])
}

/// A number's text as the type `sig` (decimal, `0x` hex, `0` octal).
fn number(t: &str, sig: &str) -> Result<Gv, ParseError> {
    let bad = |why: &str| err(format!("{t:?} as type {sig:?}: {why}"));
    if sig == "d" {
        return match t.parse::<f64>() {
            Ok(d) if d.is_finite() => Ok(Gv::F64(d)),
            _ => bad("not a number"),
        };
    }
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (radix, digits) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    let Ok(mag) = u128::from_str_radix(digits, radix) else {
        return bad("not an integer");
    };
    let v: i128 = if neg { -(mag as i128) } else { mag as i128 };
    let out = match sig {
        "y" => u8::try_from(v).ok().map(Gv::Byte),
        "n" => i16::try_from(v).ok().map(Gv::I16),
        "q" => u16::try_from(v).ok().map(Gv::U16),
        "i" => i32::try_from(v).ok().map(Gv::I32),
        "u" => u32::try_from(v).ok().map(Gv::U32),
        "x" => i64::try_from(v).ok().map(Gv::I64),
        "t" => u64::try_from(v).ok().map(Gv::U64),
        _ => return bad("not a numeric type"),
    };
    out.map_or_else(|| bad("out of range"), Ok)
}

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn node(&mut self, depth: usize) -> Result<Node, ParseError> {
        if depth > 32 {
            return err("nested too deeply");
        }
        let mut ty: Option<String> = None;
        loop {
            let Some(t) = self.next() else {
                return err("unexpected end of the value");
            };
            let typed = |ty: &Option<String>, ok: &dyn Fn(&str) -> bool, what: &str| match ty {
                Some(s) if !ok(s) => err(format!("a {what} cannot be of type {s:?}")),
                _ => Ok(()),
            };
            return match t {
                Tok::Type(s) => {
                    if ty.is_some() {
                        return err("two type annotations for one value");
                    }
                    ty = Some(s);
                    continue;
                }
                Tok::Num(n) => {
                    typed(&ty, &|s| NUMERIC.contains(&s), "number")?;
                    if let Some(s) = &ty {
                        number(&n, s)?;
                    }
                    Ok(Node::Num(n, ty))
                }
                Tok::Str(s) => {
                    typed(&ty, &|s| matches!(s, "s" | "o" | "g"), "string")?;
                    Ok(Node::Str(s, ty))
                }
                Tok::Bytes(b) => {
                    typed(&ty, &|s| s == "ay", "byte string")?;
                    Ok(Node::Bytes(b))
                }
                Tok::Bool(b) => {
                    typed(&ty, &|s| s == "b", "boolean")?;
                    Ok(Node::Bool(b))
                }
                Tok::VOpen => {
                    typed(&ty, &|s| s == "v", "variant")?;
                    let inner = self.node(depth + 1)?;
                    match self.next() {
                        Some(Tok::VClose) => Ok(Node::Variant(Box::new(inner))),
                        _ => err("a variant must end with '>'"),
                    }
                }
                Tok::Open => {
                    typed(&ty, &|s| s.starts_with('a'), "array")?;
                    let mut items = Vec::new();
                    if self.tokens.get(self.at) == Some(&Tok::Close) {
                        self.at += 1;
                    } else {
                        loop {
                            items.push(self.node(depth + 1)?);
                            match self.next() {
                                Some(Tok::Comma) => continue,
                                Some(Tok::Close) => break,
                                _ => return err(
                                    "an array's elements are separated by ',' and it ends with ']'",
                                ),
                            }
                        }
                    }
                    let node = Node::Array(items, ty);
                    if node.sigs().is_empty() && !matches!(&node, Node::Array(v, _) if v.is_empty())
                    {
                        return err(format!("the elements of {node} have no common type"));
                    }
                    Ok(node)
                }
                other => err(format!("unexpected {other:?}")),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Gv {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn scalars_take_their_default_or_named_types() {
        assert_eq!(p("true"), Gv::Bool(true));
        assert_eq!(p("42"), Gv::I32(42));
        assert_eq!(p("-7"), Gv::I32(-7));
        assert_eq!(p("0x10"), Gv::I32(16));
        assert_eq!(p("010"), Gv::I32(8));
        assert_eq!(p("1.5"), Gv::F64(1.5));
        assert_eq!(p("uint64 123456789012"), Gv::U64(123456789012));
        assert_eq!(p("@t 5"), Gv::U64(5));
        assert_eq!(p("byte 255"), Gv::Byte(255));
        assert_eq!(p("int16 -3"), Gv::I16(-3));
        assert_eq!(p("double 2"), Gv::F64(2.0));
        assert_eq!(
            p("'inactive-or-failed'"),
            Gv::Str("inactive-or-failed".into())
        );
        assert_eq!(p("\"a\\tb\\u00e9\""), Gv::Str("a\tb\u{e9}".into()));
        assert_eq!(p("objectpath '/a/b'"), Gv::ObjPath("/a/b".into()));
    }

    #[test]
    fn arrays_take_the_common_type_of_their_elements() {
        assert_eq!(
            p("['a.service', 'b.service']"),
            Gv::Array(
                "s".into(),
                vec![Gv::Str("a.service".into()), Gv::Str("b.service".into())]
            )
        );
        assert_eq!(
            p("[1, uint64 2]"),
            Gv::Array("t".into(), vec![Gv::U64(1), Gv::U64(2)])
        );
        assert_eq!(p("@as []"), Gv::Array("s".into(), vec![]));
        assert_eq!(p("[1, 2]").signature(), "ai");
        assert_eq!(p("<uint32 3>"), Gv::Variant(Box::new(Gv::U32(3))));
    }

    #[test]
    fn bad_texts_are_refused_with_a_reason() {
        for bad in [
            "",
            "[]",
            "[1, 'a']",
            "uint64 -1",
            "byte 256",
            "'open",
            "uint64 'x'",
            "{'a': 1}",
            "(1, 2)",
            "1 2",
            "nonsense",
            "@zz 1",
            "int32 int32 1",
            "[1,",
        ] {
            assert!(
                parse(bad).is_err(),
                "{bad:?} was accepted: {:?}",
                parse(bad)
            );
        }
    }
}
