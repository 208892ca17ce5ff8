//! Python's text forms of template values, so renders match `transformers` byte for byte:
//! `str(value)` for `{{ value }}` output (`None`, `True`, `['a', 1]`, `1e-05`) and
//! `json.dumps(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`,
//! which is what `transformers` installs as the `tojson` filter (default separators
//! `", "` and `": "`, non-ASCII kept, not HTML-escaped; unlike Jinja's own `tojson`).

use std::fmt::Write as _;

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Value};

/// Arguments of Python's `json.dumps` that the `tojson` filter passes through.
#[derive(Debug, Clone, Default)]
pub(super) struct JsonOptions {
    pub ensure_ascii: bool,
    /// `None`: one line. `Some(unit)`: pretty-printed, `unit` repeated per nesting level.
    pub indent: Option<String>,
    /// `(item_separator, key_separator)`; `None` picks Python's defaults for `indent`.
    pub separators: Option<(String, String)>,
    pub sort_keys: bool,
}

/// `json.dumps(value, ...)`.
pub(super) fn json_dumps(value: &Value, options: &JsonOptions) -> Result<String, Error> {
    let (item_sep, key_sep) = match (&options.separators, &options.indent) {
        (Some((item, key)), _) => (item.as_str(), key.as_str()),
        (None, Some(_)) => (",", ": "),
        (None, None) => (", ", ": "),
    };
    let mut encoder = JsonEncoder {
        options,
        item_sep,
        key_sep,
        out: String::new(),
    };
    encoder.value(value, 0)?;
    Ok(encoder.out)
}

struct JsonEncoder<'a> {
    options: &'a JsonOptions,
    item_sep: &'a str,
    key_sep: &'a str,
    out: String,
}

impl JsonEncoder<'_> {
    fn value(&mut self, value: &Value, level: usize) -> Result<(), Error> {
        match value.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.out.push_str(&json_number(value)?),
            ValueKind::String => write_json_string(
                &mut self.out,
                value.as_str().unwrap_or_default(),
                self.options.ensure_ascii,
            ),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.container('[', ']', items.len(), level, |enc, i, level| {
                    enc.value(&items[i], level)
                })?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    entries.push((json_key(&key)?, item));
                }
                if self.options.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container('{', '}', entries.len(), level, |enc, i, level| {
                    write_json_string(&mut enc.out, &entries[i].0, enc.options.ensure_ascii);
                    enc.out.push_str(enc.key_sep);
                    enc.value(&entries[i].1, level)
                })?;
            }
            kind => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: object of type {kind} is not JSON serializable"),
                ))
            }
        }
        Ok(())
    }

    /// Writes `open item sep item ... close`, with Python's newline-and-indent layout when
    /// `indent` is set (`[]`/`{}` stay on one line when empty).
    fn container(
        &mut self,
        open: char,
        close: char,
        len: usize,
        level: usize,
        mut item: impl FnMut(&mut Self, usize, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.out.push(open);
        if len == 0 {
            self.out.push(close);
            return Ok(());
        }
        let indent = self.options.indent.clone();
        for i in 0..len {
            if i > 0 {
                self.out.push_str(self.item_sep);
            }
            if let Some(unit) = &indent {
                self.out.push('\n');
                self.out.push_str(&unit.repeat(level + 1));
            }
            item(self, i, level + 1)?;
        }
        if let Some(unit) = &indent {
            self.out.push('\n');
            self.out.push_str(&unit.repeat(level));
        }
        self.out.push(close);
        Ok(())
    }
}

/// A number as `json.dumps` writes it: integers as digits, floats as `float.__repr__`,
/// non-finite floats as `NaN` / `Infinity` / `-Infinity`.
fn json_number(value: &Value) -> Result<String, Error> {
    if value.is_integer() {
        return Ok(value.to_string());
    }
    let f = f64::try_from(value.clone())?;
    Ok(if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        py_float_repr(f)
    })
}

/// A dict key as `json.dumps` converts it: strings as they are, numbers, booleans and
/// `None` to their JSON text; anything else is a `TypeError` in Python.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => json_number(key),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

/// A JSON string literal as Python's encoder writes it: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`,
/// `\f`, other control characters as `\u00XX`; with `ensure_ascii`, every non-ASCII
/// character as `\uXXXX` (UTF-16 surrogate pairs above the BMP).
fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` (= `str(float)`): the shortest digits that round-trip, in fixed
/// notation when the decimal exponent is in `-4 < exp <= 16`, else `d.ddde±XX`; always with a
/// `.0` when integral in fixed notation.
pub(super) fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Rust's `{:e}` prints the shortest round-trip digits, like Python's repr.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let decpt = exp + 1; // position of the decimal point relative to `digits`
    let mut out = String::new();
    if f < 0.0 {
        out.push('-');
    }
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-decpt) as usize));
        out.push_str(&digits);
    } else if decpt as usize >= digits.len() {
        out.push_str(&digits);
        out.push_str(&"0".repeat(decpt as usize - digits.len()));
        out.push_str(".0");
    } else {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    }
    out
}

/// Python's `str(value)`, which Jinja2 uses to print `{{ value }}`; undefined prints nothing.
pub(super) fn py_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::Undefined => String::new(),
        _ => py_repr(value),
    }
}

/// Python's `repr(value)` for the JSON-like values a template sees.
fn py_repr(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".to_owned(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_owned(),
        ValueKind::Number if value.is_integer() => value.to_string(),
        ValueKind::Number => f64::try_from(value.clone())
            .map(py_float_repr)
            .unwrap_or_else(|_| value.to_string()),
        ValueKind::String => py_str_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => format!(
                "[{}]",
                items.map(|v| py_repr(&v)).collect::<Vec<_>>().join(", ")
            ),
            Err(_) => value.to_string(),
        },
        ValueKind::Map => match value.try_iter() {
            Ok(keys) => {
                let entries: Vec<String> = keys
                    .map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        format!("{}: {}", py_repr(&k), py_repr(&v))
                    })
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
            Err(_) => value.to_string(),
        },
        _ => value.to_string(),
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; escapes for the
/// quote, backslash and non-printable characters.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{a0}').contains(&c) || c == '\u{ad}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
            (f64::INFINITY, "inf"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn json_dumps_matches_python_defaults() {
        let value = Value::from_serialize(serde_json::json!({
            "b": [1, 2.5, true, null, "x\"y\n\u{1}é🦀"],
            "a": {},
            "c": [],
        }));
        assert_eq!(
            json_dumps(&value, &JsonOptions::default()).unwrap(),
            "{\"b\": [1, 2.5, true, null, \"x\\\"y\\n\\u0001é🦀\"], \"a\": {}, \"c\": []}"
        );
        let ascii = JsonOptions {
            ensure_ascii: true,
            ..JsonOptions::default()
        };
        assert_eq!(
            json_dumps(&Value::from("é🦀"), &ascii).unwrap(),
            "\"\\u00e9\\ud83e\\udd80\""
        );
        let pretty = JsonOptions {
            indent: Some("  ".into()),
            sort_keys: true,
            ..JsonOptions::default()
        };
        assert_eq!(
            json_dumps(&value, &pretty).unwrap(),
            "{\n  \"a\": {},\n  \"b\": [\n    1,\n    2.5,\n    true,\n    null,\n    \"x\\\"y\\n\\u0001é🦀\"\n  ],\n  \"c\": []\n}"
        );
        let compact = JsonOptions {
            separators: Some((",".into(), ":".into())),
            ..JsonOptions::default()
        };
        assert_eq!(
            json_dumps(&Value::from_serialize([1, 2]), &compact).unwrap(),
            "[1,2]"
        );
        assert!(json_dumps(&Value::UNDEFINED, &JsonOptions::default()).is_err());
    }

    #[test]
    fn str_matches_python() {
        let value =
            Value::from_serialize(serde_json::json!({"a": [1, "it's", "q\"'", null, true, 0.5]}));
        assert_eq!(
            py_str(&value),
            "{'a': [1, \"it's\", 'q\"\\'', None, True, 0.5]}"
        );
        assert_eq!(py_str(&Value::from(())), "None");
        assert_eq!(py_str(&Value::from(false)), "False");
        assert_eq!(py_str(&Value::UNDEFINED), "");
        assert_eq!(py_str(&Value::from("plain")), "plain");
    }
}
