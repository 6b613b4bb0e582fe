//! YAML output in kubectl's shape: block mappings, sequences not indented under their key,
//! multi-line strings as literal blocks, and strings double-quoted whenever a YAML 1.1 or 1.2
//! reader could take them for something else (`yes`, `on`, `0755`, `1_000`, timestamps).
//!
//! serde_norway parses our input, but its emitter chooses quotes by YAML 1.2 rules only and
//! cannot be told otherwise; its output would then change meaning when piped into kubectl
//! (go-yaml reads YAML 1.1), hence this emitter for the one type we print, `serde_json::Value`.

use serde_json::{Map, Value};

/// Renders a value as a YAML document (keys in the value's order).
pub(crate) fn to_yaml_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A mapping at `indent`; `inline_first` when the first key follows a `- ` already written.
fn write_mapping(out: &mut String, map: &Map<String, Value>, indent: usize, inline_first: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        out.push_str(&string_scalar(key, indent));
        out.push(':');
        write_value_after_key(out, value, indent);
    }
}

fn write_value_after_key(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, map, indent + 2, false);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, items, indent, false);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, indent));
            out.push('\n');
        }
    }
}

/// A sequence whose dashes are at `indent`.
fn write_sequence(out: &mut String, items: &[Value], indent: usize, inline_first: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                out.push(' ');
                write_mapping(out, map, indent + 2, true);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push(' ');
                write_sequence(out, inner, indent + 2, true);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other, indent));
                out.push('\n');
            }
        }
    }
}

/// A scalar (or empty collection) as it follows `key: ` or `- ` at `indent`.
fn scalar(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_scalar(s, indent),
        Value::Array(_) => "[]".to_string(),
        Value::Object(_) => "{}".to_string(),
    }
}

fn string_scalar(s: &str, indent: usize) -> String {
    if s.contains('\n') {
        if let Some(block) = literal_block(s, indent) {
            return block;
        }
        return double_quoted(s);
    }
    if needs_quotes(s) {
        double_quoted(s)
    } else {
        s.to_string()
    }
}

fn double_quoted(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar with the same escapes.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// `|` / `|-` literal block for multi-line text, when it can be written as one exactly.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    let (body, chomp) = match s.strip_suffix('\n') {
        Some(body) if !body.ends_with('\n') => (body, "|"),
        Some(_) => return None,
        None => (s, "|-"),
    };
    let lines: Vec<&str> = body.split('\n').collect();
    let printable = |c: char| !c.is_control() || c == '\t';
    let representable = lines.first().is_some_and(|l| !l.starts_with([' ', '\t']))
        && lines
            .iter()
            .all(|l| !l.ends_with([' ', '\t']) && l.chars().all(printable));
    if !representable {
        return None;
    }
    let mut text = chomp.to_string();
    for line in lines {
        text.push('\n');
        if !line.is_empty() {
            pad(&mut text, indent + 2);
            text.push_str(line);
        }
    }
    Some(text)
}

/// Whether a one-line string must be quoted to stay a string for YAML 1.1 and 1.2 readers.
pub(crate) fn needs_quotes(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    if s.starts_with([' ', '\t']) || s.ends_with([' ', '\t', ':']) {
        return true;
    }
    // `-` may start a plain scalar when a non-space follows (`-c`), but not a `---` marker.
    let dash_ok =
        first == '-' && s.len() > 1 && !s[1..].starts_with([' ', '\t']) && !s.starts_with("---");
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) && !dash_ok {
        return true;
    }
    if s.contains(": ") || s.contains(" #") || s.chars().any(|c| c.is_control()) {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    const SPECIAL: [&str; 14] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "<<", "=", ".inf", ".nan",
    ];
    if SPECIAL.contains(&lower.as_str()) {
        return true;
    }
    looks_numeric(s) || looks_like_timestamp(s)
}

fn looks_numeric(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let Some(first) = body.chars().next() else {
        return false;
    };
    if !(first.is_ascii_digit() || first == '.') {
        return false;
    }
    let lower = body.to_ascii_lowercase();
    if lower == ".inf" || lower == ".nan" {
        return true;
    }
    // YAML 1.1 allows `_` separators, `0x`/`0o`/`0b` prefixes and `1:30` sexagesimals.
    let plain: String = lower.chars().filter(|c| *c != '_').collect();
    if plain.parse::<f64>().is_ok() {
        return true;
    }
    for prefix in ["0x", "0o", "0b"] {
        if let Some(digits) = plain.strip_prefix(prefix) {
            if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit()) {
                return true;
            }
        }
    }
    plain.contains(':')
        && plain
            .split(':')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// `2026-11-27`, `2026-11-27T16:11:25Z` and the like.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5].is_ascii_digit()
        && (b[6] == b'-' || (b[6].is_ascii_digit() && b.get(7) == Some(&b'-')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_shaped_documents() {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"creationTimestamp": "2026-11-27T16:11:25Z", "name": "web-1", "resourceVersion": "1003",
                         "labels": {"enabled": "yes", "app": "demo"}, "annotations": {}},
            "spec": {"containers": [{"image": "nginx:1.27", "name": "main", "args": ["-c", "echo hi"], "ports": []}],
                     "nodeName": "node-1", "matrix": [[1, 2], []]},
            "status": {"conditions": [{"status": "True", "type": "Ready"}], "podIP": "10.0.0.5", "restartCount": 0,
                       "ready": true, "message": null}
        });
        let mut sorted = pod.clone();
        sorted.sort_all_objects();
        assert_eq!(
            to_yaml_string(&sorted),
            r#"apiVersion: v1
kind: Pod
metadata:
  annotations: {}
  creationTimestamp: "2026-11-27T16:11:25Z"
  labels:
    app: demo
    enabled: "yes"
  name: web-1
  resourceVersion: "1003"
spec:
  containers:
  - args:
    - -c
    - echo hi
    image: nginx:1.27
    name: main
    ports: []
  matrix:
  - - 1
    - 2
  - []
  nodeName: node-1
status:
  conditions:
  - status: "True"
    type: Ready
  message: null
  podIP: 10.0.0.5
  ready: true
  restartCount: 0
"#
        );
        let back: Value = serde_norway::from_str(&to_yaml_string(&sorted)).unwrap();
        assert_eq!(back, sorted);
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        let cm = json!({"data": {"script": "#!/bin/sh\necho hi\n\nexit 0\n", "raw": "a\nb", "odd": "x \ny", "lead": " a\nb"}});
        let text = to_yaml_string(&cm);
        assert_eq!(
            text,
            "data:\n  lead: \" a\\nb\"\n  odd: \"x \\ny\"\n  raw: |-\n    a\n    b\n  script: |\n    #!/bin/sh\n    echo hi\n\n    exit 0\n"
        );
        let back: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(back, cm);
    }

    #[test]
    fn quoting() {
        for s in [
            "",
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "true",
            "null",
            "~",
            "1",
            "0755",
            "1_000",
            "1e3",
            "-5",
            "+1",
            ".5",
            "0x1F",
            "1:30",
            ".inf",
            "2026-11-27",
            "2026-11-27T16:11:25Z",
            "a: b",
            "a #b",
            "-",
            "---",
            "- x",
            "*x",
            "&a",
            "!t",
            "%p",
            "@x",
            "`x",
            "'q",
            "\"q",
            "{x}",
            "[x]",
            "x:",
            " x",
            "x ",
            "a\tb\u{7}",
        ] {
            assert!(needs_quotes(s), "{s:?} should be quoted");
            let doc = json!({ "k": s });
            let back: Value = serde_norway::from_str(&to_yaml_string(&doc)).unwrap();
            assert_eq!(back, doc, "{s:?} round trip");
        }
        for s in [
            "-c",
            "--all",
            "nginx:1.27",
            "10.0.0.5",
            "web-1",
            "1/1",
            "Running",
            "app=web",
            "default-scheduler",
            "a b",
            "x-y_z.q",
        ] {
            assert!(!needs_quotes(s), "{s:?} should be plain");
        }
    }

    #[test]
    fn scalars_and_empty_documents() {
        assert_eq!(to_yaml_string(&json!({})), "{}\n");
        assert_eq!(to_yaml_string(&json!([])), "[]\n");
        assert_eq!(to_yaml_string(&json!("x")), "x\n");
        assert_eq!(to_yaml_string(&json!([1, "a"])), "- 1\n- a\n");
    }
}
