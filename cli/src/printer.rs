//! Output: kubectl-style tables from the server-side `Table`, YAML/JSON/name printing, human
//! ages and times, and the stdout/stderr writers every command uses.
//!
//! Alignment follows Go's `text/tabwriter` as kubectl configures it (cells end with a tab,
//! columns are padded, the last cell of a line is not), including the remembered widths
//! kubectl uses to keep watch rows aligned with the first table.

use std::io::Write as _;

use jiff::{tz::TimeZone, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};

/// kubectl's table tabwriter: minimum cell width 6, padding 3.
pub(crate) const TABLE_MINWIDTH: usize = 6;
pub(crate) const TABLE_PADDING: usize = 3;
/// kubectl's describe tabwriter: minimum width 0, padding 2.
pub(crate) const DESCRIBE_MINWIDTH: usize = 0;
pub(crate) const DESCRIBE_PADDING: usize = 2;
/// The most characters printed of one table cell.
const CELL_CHARS_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PrinterError {
    #[error(
        "unable to match a printer suitable for the output format \"{0}\", allowed formats are: json,name,wide,yaml"
    )]
    UnknownFormat(String),
    #[error("cannot decode the server's Table: {0}")]
    Table(serde_json::Error),
}

/// `-o`: the human table (optionally wide), YAML, JSON or `type/name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

impl OutputFormat {
    pub(crate) fn parse(flag: Option<&str>) -> Result<OutputFormat, PrinterError> {
        match flag.unwrap_or("") {
            "" => Ok(OutputFormat::Table),
            "wide" => Ok(OutputFormat::Wide),
            "yaml" => Ok(OutputFormat::Yaml),
            "json" => Ok(OutputFormat::Json),
            "name" => Ok(OutputFormat::Name),
            other => Err(PrinterError::UnknownFormat(other.to_string())),
        }
    }

    pub(crate) fn is_table(self) -> bool {
        matches!(self, OutputFormat::Table | OutputFormat::Wide)
    }
}

/// Writes to stdout and flushes (results go to stdout).
pub(crate) fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes one line to stderr (errors, warnings and notices go to stderr).
pub(crate) fn warn(line: &str) {
    let mut stderr = std::io::stderr().lock();
    // Nothing useful can be done when stderr itself is gone.
    let _ = writeln!(stderr, "{line}");
}

// ---------------------------------------------------------------------------------------------
// Tabwriter

/// Go's `text/tabwriter` with space padding, plus liggitt/tabwriter's `RememberWidths`.
#[derive(Debug, Clone)]
pub(crate) struct TabWriter {
    minwidth: usize,
    padding: usize,
    remembered: Option<Vec<usize>>,
}

impl TabWriter {
    pub(crate) fn new(minwidth: usize, padding: usize) -> TabWriter {
        TabWriter {
            minwidth,
            padding,
            remembered: None,
        }
    }

    /// A writer whose column widths only grow from one `format` call to the next.
    pub(crate) fn remembering(minwidth: usize, padding: usize) -> TabWriter {
        TabWriter {
            minwidth,
            padding,
            remembered: Some(Vec::new()),
        }
    }

    /// Aligns `text`: each `\t` ends a cell; cells of one column in consecutive lines form a
    /// block padded to its widest cell plus padding.
    pub(crate) fn format(&mut self, text: &str) -> String {
        let ends_with_newline = text.ends_with('\n');
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.is_empty() && !ends_with_newline {
            return String::new();
        }
        let lines: Vec<Vec<&str>> = body.split('\n').map(|l| l.split('\t').collect()).collect();
        let mut rendered: Vec<String> = vec![String::new(); lines.len()];
        let mut widths = Vec::new();
        self.format_range(&lines, 0, lines.len(), &mut widths, &mut rendered);
        let mut result = rendered.join("\n");
        if ends_with_newline {
            result.push('\n');
        }
        result
    }

    fn format_range(
        &mut self,
        lines: &[Vec<&str>],
        mut line0: usize,
        line1: usize,
        widths: &mut Vec<usize>,
        rendered: &mut [String],
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            write_lines(lines, line0, this, widths, rendered);
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(display_width(lines[this][column]) + self.padding);
                this += 1;
            }
            if let Some(remembered) = &mut self.remembered {
                if remembered.len() <= column {
                    remembered.resize(column + 1, 0);
                }
                width = width.max(remembered[column]);
                remembered[column] = width;
            }
            widths.push(width);
            self.format_range(lines, line0, this, widths, rendered);
            widths.pop();
            line0 = this;
        }
        write_lines(lines, line0, line1, widths, rendered);
    }
}

fn write_lines(
    lines: &[Vec<&str>],
    from: usize,
    to: usize,
    widths: &[usize],
    rendered: &mut [String],
) {
    for (line, text) in lines[from..to].iter().zip(rendered[from..to].iter_mut()) {
        for (j, cell) in line.iter().enumerate() {
            text.push_str(cell);
            if let Some(width) = widths.get(j) {
                let pad = width.saturating_sub(display_width(cell));
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
    }
}

fn display_width(cell: &str) -> usize {
    cell.chars().count()
}

// ---------------------------------------------------------------------------------------------
// Tables

/// One column of a server-side `Table`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct Column {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) format: String,
    pub(crate) priority: i64,
}

/// One row: the cells and the object (usually `PartialObjectMetadata`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Row {
    pub(crate) cells: Vec<Value>,
    pub(crate) object: Value,
}

impl Row {
    pub(crate) fn meta(&self, field: &str) -> &Value {
        self.object
            .get("metadata")
            .and_then(|m| m.get(field))
            .unwrap_or(&Value::Null)
    }
}

/// A `meta.k8s.io/v1 Table`, or a plain list or object rendered as NAME and AGE the way
/// kubectl falls back when a server has no table support.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Table {
    pub(crate) columns: Vec<Column>,
    pub(crate) rows: Vec<Row>,
    pub(crate) resource_version: String,
    pub(crate) continue_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[derive(Default)]
struct RawTable {
    column_definitions: Option<Vec<Column>>,
    rows: Option<Vec<Row>>,
}

impl Table {
    pub(crate) fn from_value(value: Value, now: Timestamp) -> Result<Table, PrinterError> {
        let resource_version = meta_str(&value, "resourceVersion").to_string();
        let continue_token = meta_str(&value, "continue").to_string();
        if value.get("kind").and_then(Value::as_str) == Some("Table") {
            let raw: RawTable = serde_json::from_value(value).map_err(PrinterError::Table)?;
            return Ok(Table {
                columns: raw.column_definitions.unwrap_or_default(),
                rows: raw.rows.unwrap_or_default(),
                resource_version,
                continue_token,
            });
        }
        let objects: Vec<Value> = match value.get("items") {
            Some(Value::Array(items)) => items.clone(),
            Some(_) => Vec::new(),
            None if value.is_object() => vec![value.clone()],
            None => Vec::new(),
        };
        let rows = objects
            .into_iter()
            .map(|object| {
                let name = meta_str(&object, "name").to_string();
                let age = age_since(meta_str(&object, "creationTimestamp"), now);
                Row {
                    cells: vec![Value::String(name), Value::String(age)],
                    object,
                }
            })
            .collect();
        Ok(Table {
            columns: vec![
                Column {
                    name: "Name".to_string(),
                    kind: "string".to_string(),
                    format: "name".to_string(),
                    priority: 0,
                },
                Column {
                    name: "Age".to_string(),
                    kind: "string".to_string(),
                    format: String::new(),
                    priority: 0,
                },
            ],
            rows,
            resource_version,
            continue_token,
        })
    }
}

/// How a table is decorated, as kubectl's flags ask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableOptions {
    /// `-o wide`: include priority > 0 columns.
    pub(crate) wide: bool,
    /// `-A` on a namespaced resource: NAMESPACE first, from each row's object.
    pub(crate) namespace_column: bool,
    /// `--show-labels`: LABELS last.
    pub(crate) show_labels: bool,
    /// `-L key`: one column per label key.
    pub(crate) label_columns: Vec<String>,
    /// Several types at once: names become `kind.group/name`.
    pub(crate) kind_prefix: Option<String>,
    /// `--output-watch-events`: EVENT first.
    pub(crate) event_column: bool,
}

fn visible(columns: &[Column], opts: &TableOptions) -> Vec<usize> {
    columns
        .iter()
        .enumerate()
        .filter(|(_, c)| opts.wide || c.priority == 0)
        .map(|(i, _)| i)
        .collect()
}

/// The header line (tab-separated, ending in a newline).
pub(crate) fn header_line(columns: &[Column], opts: &TableOptions) -> String {
    let mut cells: Vec<String> = Vec::new();
    if opts.event_column {
        cells.push("EVENT".to_string());
    }
    if opts.namespace_column {
        cells.push("NAMESPACE".to_string());
    }
    cells.extend(
        visible(columns, opts)
            .into_iter()
            .map(|i| columns[i].name.to_uppercase()),
    );
    for key in &opts.label_columns {
        let short = key.rsplit('/').next().unwrap_or(key);
        cells.push(short.to_uppercase());
    }
    if opts.show_labels {
        cells.push("LABELS".to_string());
    }
    cells.join("\t") + "\n"
}

/// One row line (tab-separated, ending in a newline).
pub(crate) fn row_line(
    columns: &[Column],
    row: &Row,
    opts: &TableOptions,
    event: Option<&str>,
) -> String {
    let mut cells: Vec<String> = Vec::new();
    if opts.event_column {
        cells.push(event.unwrap_or("").to_string());
    }
    if opts.namespace_column {
        cells.push(row.meta("namespace").as_str().unwrap_or("").to_string());
    }
    let name_column = columns.iter().position(|c| c.format == "name").or_else(|| {
        columns
            .first()
            .filter(|c| c.name.eq_ignore_ascii_case("name"))
            .map(|_| 0)
    });
    for i in visible(columns, opts) {
        let value = row.cells.get(i).unwrap_or(&Value::Null);
        let mut text = cell_text(value);
        if let (Some(prefix), Some(n)) = (&opts.kind_prefix, name_column) {
            if n == i {
                text = format!("{prefix}/{text}");
            }
        }
        cells.push(text);
    }
    let labels = row.meta("labels");
    for key in &opts.label_columns {
        cells.push(labels.get(key).map(cell_text).unwrap_or_default());
    }
    if opts.show_labels {
        cells.push(format_labels(labels));
    }
    cells.join("\t") + "\n"
}

/// A cell as kubectl prints it: strings cut at the first line break (with `...`), `null`
/// empty, numbers and booleans as written.
pub(crate) fn cell_text(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => match s.find(['\n', '\r', '\u{c}']) {
            Some(at) => format!("{}...", &s[..at]),
            None => s.clone(),
        },
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    };
    let text = text.replace('\t', " ");
    if text.chars().count() > CELL_CHARS_MAX {
        text.chars().take(CELL_CHARS_MAX).collect::<String>() + "..."
    } else {
        text
    }
}

/// `a=1,b=2` sorted by key, or `<none>`.
pub(crate) fn format_labels(labels: &Value) -> String {
    let Some(map) = labels.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// A whole table, aligned (header included unless `no_headers`).
pub(crate) fn render_table(table: &Table, opts: &TableOptions, no_headers: bool) -> String {
    let mut text = String::new();
    if !no_headers {
        text.push_str(&header_line(&table.columns, opts));
    }
    for row in &table.rows {
        text.push_str(&row_line(&table.columns, row, opts, None));
    }
    TabWriter::new(TABLE_MINWIDTH, TABLE_PADDING).format(&text)
}

// ---------------------------------------------------------------------------------------------
// Objects

/// `metadata.<field>` as a string, or `""`.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Removes `metadata.managedFields`, which kubectl hides unless asked.
pub(crate) fn strip_managed_fields(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

/// kubectl's `List` wrapper for several objects.
pub(crate) fn list_of(items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""}
    })
}

/// Fills a list item's missing `apiVersion`/`kind` (lists often omit them per item).
pub(crate) fn fill_type(object: &mut Value, api_version: &str, kind: &str) {
    if let Some(map) = object.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(api_version.to_string()));
        map.entry("kind")
            .or_insert_with(|| Value::String(kind.to_string()));
    }
}

/// YAML as kubectl prints it (keys sorted).
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut sorted = value.clone();
    sorted.sort_all_objects();
    crate::yaml::to_yaml_string(&sorted)
}

/// JSON as `kubectl get -o json` prints it: keys sorted, four-space indent, final newline.
pub(crate) fn to_json(value: &Value) -> String {
    let mut sorted = value.clone();
    sorted.sort_all_objects();
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    if serde::Serialize::serialize(&sorted, &mut ser).is_err() {
        // Serializing a `Value` into memory cannot fail; fall back to the compact form anyway.
        return sorted.to_string() + "\n";
    }
    String::from_utf8_lossy(&buf).into_owned() + "\n"
}

/// An object's `-o name` form: `pod/x`, `deployment.apps/x`.
pub(crate) fn object_name(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = crate::discovery::split_api_version(api_version).0;
    format!(
        "{}/{}",
        crate::discovery::type_name(kind, group),
        meta_str(object, "name")
    )
}

// ---------------------------------------------------------------------------------------------
// Time

/// kubectl's `HumanDuration`: `45s`, `5m3s`, `12m`, `3h10m`, `20h`, `3d4h`, `40d`, `2y10d`.
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 timestamp, or `<unknown>`.
pub(crate) fn age_since(timestamp: &str, now: Timestamp) -> String {
    match timestamp.parse::<Timestamp>() {
        Ok(t) => human_duration(now.as_second() - t.as_second()),
        Err(_) => "<unknown>".to_string(),
    }
}

/// A timestamp as kubectl describe prints it (RFC 1123 with numeric zone) in `tz`.
pub(crate) fn format_time(timestamp: &str, tz: &TimeZone) -> String {
    match timestamp.parse::<Timestamp>() {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%a, %d %b %Y %H:%M:%S %z")
            .to_string(),
        Err(_) => timestamp.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods_table() -> Table {
        let value = json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "1005"},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "priority": 0},
                {"name": "Ready", "type": "string", "format": "", "priority": 0},
                {"name": "Status", "type": "string", "format": "", "priority": 0},
                {"name": "Restarts", "type": "integer", "format": "", "priority": 0},
                {"name": "Age", "type": "string", "format": "", "priority": 0},
                {"name": "IP", "type": "string", "format": "", "priority": 1},
                {"name": "Node", "type": "string", "format": "", "priority": 1},
                {"name": "Nominated Node", "type": "string", "format": "", "priority": 1},
                {"name": "Readiness Gates", "type": "string", "format": "", "priority": 1}
            ],
            "rows": [
                {"cells": ["web-1", "1/1", "Running", 0, "2s", "10.0.0.5", "node-1", "<none>", "<none>"],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": {"name": "web-1", "namespace": "default", "labels": {"tier": "web", "app": "demo"}}}},
                {"cells": ["db-primary-0", "0/1", "Pending", 12, "3h10m", null, null, "<none>", "<none>"],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": {"name": "db-primary-0", "namespace": "kube-system"}}}
            ]
        });
        Table::from_value(value, Timestamp::UNIX_EPOCH).unwrap()
    }

    fn check(table: &Table, opts: TableOptions, expected: &str) {
        assert_eq!(render_table(table, &opts, false), expected);
    }

    #[test]
    fn table_like_kubectl_get_pods() {
        let mut table = pods_table();
        table.rows.truncate(1);
        check(
            &table,
            TableOptions::default(),
            "NAME    READY   STATUS    RESTARTS   AGE\n\
             web-1   1/1     Running   0          2s\n",
        );
        check(
            &table,
            TableOptions {
                wide: true,
                ..TableOptions::default()
            },
            "NAME    READY   STATUS    RESTARTS   AGE   IP         NODE     NOMINATED NODE   READINESS GATES\n\
             web-1   1/1     Running   0          2s    10.0.0.5   node-1   <none>           <none>\n",
        );
    }

    #[test]
    fn table_with_namespaces_labels_and_kind() {
        let table = pods_table();
        check(
            &table,
            TableOptions {
                namespace_column: true,
                show_labels: true,
                ..TableOptions::default()
            },
            "NAMESPACE     NAME           READY   STATUS    RESTARTS   AGE     LABELS\n\
             default       web-1          1/1     Running   0          2s      app=demo,tier=web\n\
             kube-system   db-primary-0   0/1     Pending   12         3h10m   <none>\n",
        );
        check(
            &table,
            TableOptions {
                kind_prefix: Some("pod".to_string()),
                label_columns: vec!["app".to_string()],
                ..TableOptions::default()
            },
            "NAME               READY   STATUS    RESTARTS   AGE     APP\n\
             pod/web-1          1/1     Running   0          2s      demo\n\
             pod/db-primary-0   0/1     Pending   12         3h10m   \n",
        );
        assert_eq!(
            render_table(&table, &TableOptions::default(), true),
            "web-1          1/1   Running   0     2s\n\
             db-primary-0   0/1   Pending   12    3h10m\n"
        );
    }

    #[test]
    fn plain_lists_fall_back_to_name_and_age() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let list = json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "7", "continue": "c"},
            "items": [{"metadata": {"name": "cfg", "creationTimestamp": "2026-01-01T00:00:00Z"}}]});
        let table = Table::from_value(list, now).unwrap();
        assert_eq!(table.resource_version, "7");
        assert_eq!(table.continue_token, "c");
        check(&table, TableOptions::default(), "NAME   AGE\ncfg    10m\n");
    }

    #[test]
    fn remembered_widths_keep_watch_rows_aligned() {
        let table = pods_table();
        let opts = TableOptions::default();
        let mut writer = TabWriter::remembering(TABLE_MINWIDTH, TABLE_PADDING);
        let first = writer.format(
            &(header_line(&table.columns, &opts)
                + &row_line(&table.columns, &table.rows[0], &opts, None)),
        );
        assert_eq!(
            first,
            "NAME    READY   STATUS    RESTARTS   AGE\nweb-1   1/1     Running   0          2s\n"
        );
        let next = writer.format(&row_line(&table.columns, &table.rows[0], &opts, None));
        assert_eq!(next, "web-1   1/1     Running   0          2s\n");
        let wider = writer.format(&row_line(&table.columns, &table.rows[1], &opts, None));
        assert_eq!(wider, "db-primary-0   0/1     Pending   12         3h10m\n");
        let after = writer.format(&row_line(&table.columns, &table.rows[0], &opts, None));
        assert_eq!(after, "web-1          1/1     Running   0          2s\n");
    }

    #[test]
    fn describe_style_blocks() {
        let text = "Name:\tweb-1\nAnnotations:\t<none>\nContainers:\n  main:\n    Image:\tnginx\n    Restart Count:\t0\nEvents:\n  Type\tReason\n  ----\t------\n";
        assert_eq!(
            TabWriter::new(DESCRIBE_MINWIDTH, DESCRIBE_PADDING).format(text),
            "Name:         web-1\nAnnotations:  <none>\nContainers:\n  main:\n    Image:          nginx\n    Restart Count:  0\nEvents:\n  Type  Reason\n  ----  ------\n"
        );
    }

    #[test]
    fn cells() {
        assert_eq!(cell_text(&json!("a\nb")), "a...");
        assert_eq!(cell_text(&json!(null)), "");
        assert_eq!(cell_text(&json!(3)), "3");
        assert_eq!(cell_text(&json!(1.5)), "1.5");
        assert_eq!(cell_text(&json!(true)), "true");
    }

    #[test]
    fn human_durations() {
        for (secs, text) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (303, "5m3s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600 + 600, "3h10m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (40 * 86400, "40d"),
            (2 * 365 * 86400 + 10 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), text, "{secs}s");
        }
    }

    #[test]
    fn output_formats() {
        assert_eq!(OutputFormat::parse(None).unwrap(), OutputFormat::Table);
        assert_eq!(
            OutputFormat::parse(Some("wide")).unwrap(),
            OutputFormat::Wide
        );
        assert_eq!(
            OutputFormat::parse(Some("jsonpath")).unwrap_err().to_string(),
            "unable to match a printer suitable for the output format \"jsonpath\", allowed formats are: json,name,wide,yaml"
        );
    }

    #[test]
    fn objects_print_sorted() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x", "resourceVersion": "5", "managedFields": [{}]}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let mut shown = pod.clone();
        strip_managed_fields(&mut shown);
        assert_eq!(
            to_yaml(&shown),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  resourceVersion: \"5\"\nspec:\n  containers:\n  - image: nginx\n    name: c\n"
        );
        assert_eq!(
            to_json(&json!({"b": 1, "a": [true]})),
            "{\n    \"a\": [\n        true\n    ],\n    \"b\": 1\n}\n"
        );
        assert_eq!(object_name(&pod), "pod/x");
        assert_eq!(
            object_name(
                &json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web"}})
            ),
            "deployment.apps/web"
        );
    }

    #[test]
    fn times() {
        let tz = TimeZone::UTC;
        assert_eq!(
            format_time("2026-11-27T16:11:25Z", &tz),
            "Fri, 27 Nov 2026 16:11:25 +0000"
        );
        let now: Timestamp = "2026-11-27T16:11:38Z".parse().unwrap();
        assert_eq!(age_since("2026-11-27T16:11:25Z", now), "13s");
        assert_eq!(age_since("", now), "<unknown>");
    }
}
