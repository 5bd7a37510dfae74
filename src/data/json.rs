//! Reading a transforms JSON file with typed accessors whose errors name the field (`frames[3].fl_x`).

use super::DataError;
use serde_json::{Map, Value};
use std::path::Path;

/// Reads and parses `path`; bare `NaN`/`Infinity` (Python's json writes them) become strings so the
/// field accessors can name the field that holds them instead of failing on the whole file.
pub(crate) fn read_json(path: &Path) -> Result<Value, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Read { file: path.to_path_buf(), source })?;
    serde_json::from_str(&quote_non_finite(&text))
        .map_err(|e| DataError::Json { file: path.to_path_buf(), message: e.to_string() })
}

/// Wraps the bare tokens `NaN`, `Infinity` and `-Infinity` outside strings in quotes; newlines are kept,
/// so serde's line numbers still match the file.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if c == '\\' {
                let escaped: String = rest.chars().take(2).collect();
                out.push_str(&escaped);
                rest = &rest[escaped.len()..];
                continue;
            }
            in_string = c != '"';
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["NaN", "Infinity", "-Infinity"].into_iter().find(|t| rest.starts_with(t)) {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A JSON object together with where it sits, so every error can say `file: field: problem`.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'a> {
    pub file: &'a Path,
    /// The object's own path, e.g. `frames[3]`; empty for the top level.
    pub prefix: &'a str,
    pub map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    pub fn root(file: &'a Path, value: &'a Value) -> Result<Self, DataError> {
        match value {
            Value::Object(map) => Ok(Self { file, prefix: "", map }),
            _ => Err(DataError::Json { file: file.to_path_buf(), message: "the top level is not an object".into() }),
        }
    }

    pub fn field(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    pub fn error(&self, field: String, message: impl Into<String>) -> DataError {
        DataError::Field { file: self.file.to_path_buf(), field, message: message.into() }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// A finite number, or `None` when the key is absent or null.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, DataError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => number(value).map(Some).map_err(|message| self.error(self.field(key), message)),
        }
    }

    pub fn opt_positive(&self, key: &str) -> Result<Option<f64>, DataError> {
        match self.opt_f64(key)? {
            Some(v) if v <= 0.0 => Err(self.error(self.field(key), format!("must be positive, got {v}"))),
            v => Ok(v),
        }
    }

    /// A positive whole number; `800.0` is accepted because some writers emit sizes as floats.
    pub fn opt_size(&self, key: &str) -> Result<Option<u32>, DataError> {
        match self.opt_f64(key)? {
            None => Ok(None),
            Some(v) if v >= 1.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) => Ok(Some(v as u32)),
            Some(v) => Err(self.error(self.field(key), format!("must be a positive whole number, got {v}"))),
        }
    }

    pub fn str(&self, key: &str) -> Result<&'a str, DataError> {
        match self.map.get(key) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(self.error(self.field(key), "missing")),
            Some(_) => Err(self.error(self.field(key), "must be a string")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, DataError> {
        if self.has(key) {
            self.str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn array(&self, key: &str) -> Result<&'a [Value], DataError> {
        match self.map.get(key) {
            Some(Value::Array(a)) => Ok(a),
            None | Some(Value::Null) => Err(self.error(self.field(key), "missing")),
            Some(_) => Err(self.error(self.field(key), "must be an array")),
        }
    }

    /// The object at `array[index]`; `prefix` must be the field path the caller built for it.
    pub fn element(&self, value: &'a Value, prefix: &'a str) -> Result<Obj<'a>, DataError> {
        match value {
            Value::Object(map) => Ok(Obj { file: self.file, prefix, map }),
            _ => Err(self.error(prefix.to_string(), "must be an object")),
        }
    }

    /// The top three rows of a 4x4 (or 3x4) matrix given as rows of numbers.
    pub fn matrix3x4(&self, key: &str) -> Result<[[f64; 4]; 3], DataError> {
        let field = self.field(key);
        let rows = self.array(key)?;
        if !(rows.len() == 3 || rows.len() == 4) {
            return Err(self.error(field, format!("must have 4 rows, got {}", rows.len())));
        }
        let mut m = [[0.0; 4]; 3];
        for (r, row) in rows.iter().enumerate() {
            let row = match row {
                Value::Array(row) if row.len() == 4 => row,
                _ => return Err(self.error(field, format!("row {r} must be an array of 4 numbers"))),
            };
            for (c, value) in row.iter().enumerate() {
                let v =
                    number(value).map_err(|message| self.error(field.clone(), format!("{message} at [{r}][{c}]")))?;
                if r < 3 {
                    m[r][c] = v;
                }
            }
        }
        Ok(m)
    }
}

fn number(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(n) => n.as_f64().filter(|v| v.is_finite()).ok_or_else(|| format!("{n} is out of range")),
        Value::String(s) if s == "NaN" => Err("contains NaN".into()),
        Value::String(s) if s.ends_with("Infinity") => Err("contains an infinite value".into()),
        _ => Err(format!("must be a number, got {value}")),
    }
}

#[cfg(test)]
mod tests {
    use super::quote_non_finite;

    #[test]
    fn non_finite_tokens_are_quoted_outside_strings_only() {
        let text = "{\"a\": [NaN, -Infinity, 1],\n \"NaN\": \"x\\\"NaN\"}";
        assert_eq!(quote_non_finite(text), "{\"a\": [\"NaN\", \"-Infinity\", 1],\n \"NaN\": \"x\\\"NaN\"}");
    }
}
