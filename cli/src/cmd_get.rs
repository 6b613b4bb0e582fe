//! `kctl get`: server-side tables, `-o yaml|json|name`, and `--watch` (list, then watch from
//! the list's resourceVersion, relisting after 410 Gone).

use std::time::Duration;

use anyhow::bail;
use jiff::Timestamp;
use serde_json::Value;

use crate::client::{ApiError, ACCEPT_JSON, ACCEPT_TABLE};
use crate::list::{list_objects, list_table, ListRequest, LIST_ITEMS_MAX, LIST_PAGE_LIMIT_DEFAULT};
use crate::printer::{
    header_line, list_of, object_name, out, render_table, row_line, strip_managed_fields, to_json,
    to_yaml, warn, Column, OutputFormat, TabWriter, Table, TableOptions, TABLE_MINWIDTH,
    TABLE_PADDING,
};
use crate::resource_args::ResourceArgs;
use crate::selector::Selectors;
use crate::session::{Failures, Session, Target};
use crate::watch::{WatchError, WatchStream};

/// Reconnections of a watch that fail in a row before giving up.
const WATCH_RECONNECTS_MAX: u32 = 5;
/// Pause before re-opening a watch the server ended, and the first backoff after a failure.
const WATCH_RECONNECT_DELAY_MS: u64 = 1_000;
/// Relists after `410 Gone` in a row (without an event in between) before giving up.
const WATCH_RELISTS_MAX: u32 = 5;

#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// TYPE[,TYPE...] [NAME...] or TYPE/NAME...
    args: Vec<String>,
    /// Output format: wide, yaml, json or name
    #[arg(short = 'o', long)]
    output: Option<String>,
    /// After listing, watch for changes
    #[arg(short = 'w', long)]
    watch: bool,
    /// Watch for changes without listing first
    #[arg(long)]
    watch_only: bool,
    /// With --watch, print the event type (ADDED, MODIFIED, DELETED) first
    #[arg(long)]
    output_watch_events: bool,
    /// Label selector (e.g. app=web,tier!=db)
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Field selector (e.g. status.phase=Running)
    #[arg(long)]
    field_selector: Option<String>,
    /// List across all namespaces
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Show all labels as the last column
    #[arg(long)]
    show_labels: bool,
    /// Show the resource type with each name
    #[arg(long)]
    show_kind: bool,
    /// Label keys to show as columns
    #[arg(short = 'L', long = "label-columns", value_delimiter = ',')]
    label_columns: Vec<String>,
    /// Do not print the table header
    #[arg(long)]
    no_headers: bool,
    /// Objects asked per list request (0 = all at once)
    #[arg(long, default_value_t = LIST_PAGE_LIMIT_DEFAULT)]
    chunk_size: u32,
    /// Print nothing for objects that do not exist
    #[arg(long)]
    ignore_not_found: bool,
}

pub(crate) async fn run(session: &mut Session, args: GetArgs) -> anyhow::Result<()> {
    let format = OutputFormat::parse(args.output.as_deref())?;
    let parsed = ResourceArgs::parse(&args.args, "get")?;
    if args.all_namespaces && parsed.has_names() {
        bail!("a resource cannot be retrieved by name across all namespaces");
    }
    let selectors = Selectors::new(args.selector.as_deref(), args.field_selector.as_deref());
    if parsed.has_names() && selectors.label.is_some() {
        bail!("name cannot be provided when a selector is specified");
    }
    let targets = session.targets(&parsed).await?;
    if args.watch || args.watch_only {
        return watch(session, &args, &targets, &selectors, format).await;
    }
    let mut failures = Failures::default();
    let printed = match format {
        OutputFormat::Table | OutputFormat::Wide => {
            print_tables(session, &args, &targets, &selectors, format, &mut failures).await?
        }
        OutputFormat::Yaml | OutputFormat::Json | OutputFormat::Name => {
            print_objects(session, &args, &targets, &selectors, format, &mut failures).await?
        }
    };
    let listed = targets.iter().any(|t| t.names.is_empty());
    let quiet = matches!(format, OutputFormat::Yaml | OutputFormat::Json);
    if !printed && listed && !quiet && failures.is_empty() {
        let scoped = targets.iter().any(|t| t.resource.namespaced) && !args.all_namespaces;
        if scoped {
            warn(&format!(
                "No resources found in {} namespace.",
                session.namespace
            ));
        } else {
            warn("No resources found");
        }
    }
    failures.finish()
}

fn table_options(
    args: &GetArgs,
    format: OutputFormat,
    target: &Target,
    several: bool,
) -> TableOptions {
    TableOptions {
        wide: format == OutputFormat::Wide,
        namespace_column: args.all_namespaces && target.resource.namespaced,
        show_labels: args.show_labels,
        label_columns: args.label_columns.clone(),
        kind_prefix: (several || args.show_kind).then(|| target.resource.type_name()),
        event_column: args.output_watch_events && (args.watch || args.watch_only),
    }
}

/// Prints one table per type; `true` if any row was printed.
async fn print_tables(
    session: &Session,
    args: &GetArgs,
    targets: &[Target],
    selectors: &Selectors,
    format: OutputFormat,
    failures: &mut Failures,
) -> anyhow::Result<bool> {
    let now = Timestamp::now();
    let mut printed = false;
    for target in targets {
        let ns = session.namespace_for(&target.resource, args.all_namespaces);
        let table = if target.names.is_empty() {
            let req = ListRequest {
                resource: &target.resource,
                namespace: ns.as_deref(),
                selectors,
                limit: args.chunk_size,
            };
            match list_table(&session.client, &req, now).await {
                Ok(table) => table,
                Err(crate::list::ListError::Api(err)) => {
                    failures.api(&err);
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
        } else {
            let mut table = Table::default();
            for name in &target.names {
                let path = target.resource.object_path(ns.as_deref(), name);
                match session
                    .client
                    .send(reqwest::Method::GET, &path, &[], ACCEPT_TABLE, None)
                    .await
                {
                    Ok(value) => {
                        let one = Table::from_value(value, now)?;
                        if table.columns.is_empty() {
                            table.columns = one.columns;
                        }
                        table.rows.extend(one.rows);
                    }
                    Err(err) if err.is_not_found() && args.ignore_not_found => {}
                    Err(err) => failures.api(&err),
                }
            }
            table
        };
        if table.rows.is_empty() {
            continue;
        }
        let opts = table_options(args, format, target, targets.len() > 1);
        if printed {
            out("\n")?;
        }
        out(&render_table(&table, &opts, args.no_headers))?;
        printed = true;
    }
    Ok(printed)
}

/// Prints YAML, JSON or names; `true` if any object was printed.
async fn print_objects(
    session: &Session,
    args: &GetArgs,
    targets: &[Target],
    selectors: &Selectors,
    format: OutputFormat,
    failures: &mut Failures,
) -> anyhow::Result<bool> {
    let single = targets.len() == 1 && targets[0].names.len() == 1;
    let mut objects: Vec<Value> = Vec::new();
    for target in targets {
        let ns = session.namespace_for(&target.resource, args.all_namespaces);
        if target.names.is_empty() {
            let req = ListRequest {
                resource: &target.resource,
                namespace: ns.as_deref(),
                selectors,
                limit: args.chunk_size,
            };
            match list_objects(&session.client, &req).await {
                Ok((items, _)) => objects.extend(items),
                Err(crate::list::ListError::Api(err)) => failures.api(&err),
                Err(err) => return Err(err.into()),
            }
        } else {
            for name in &target.names {
                match session
                    .client
                    .get(&target.resource.object_path(ns.as_deref(), name), &[])
                    .await
                {
                    Ok(object) => objects.push(object),
                    Err(err) if err.is_not_found() && args.ignore_not_found => {}
                    Err(err) => failures.api(&err),
                }
            }
        }
        if objects.len() > LIST_ITEMS_MAX {
            return Err(crate::list::ListError::TooMany.into());
        }
    }
    for object in &mut objects {
        strip_managed_fields(object);
    }
    let printed = !objects.is_empty();
    match format {
        OutputFormat::Name => {
            let text: String = objects.iter().map(|o| object_name(o) + "\n").collect();
            out(&text)?;
        }
        _ if single && objects.is_empty() => {}
        _ => {
            let value = if single && objects.len() == 1 {
                objects.remove(0)
            } else {
                list_of(objects)
            };
            out(&render_object(&value, format)?)?;
        }
    }
    Ok(printed)
}

fn render_object(value: &Value, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => to_json(value),
        OutputFormat::Name => object_name(value) + "\n",
        _ => to_yaml(value),
    })
}

/// Prints watch output: table rows aligned with what came before, or objects.
struct WatchPrinter {
    format: OutputFormat,
    opts: TableOptions,
    no_headers: bool,
    header_printed: bool,
    columns: Vec<Column>,
    writer: TabWriter,
    objects_printed: u64,
}

impl WatchPrinter {
    fn table(&mut self, table: &Table, event: Option<&str>) -> anyhow::Result<()> {
        if !table.columns.is_empty() {
            self.columns = table.columns.clone();
        }
        if table.rows.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        if !self.header_printed && !self.no_headers {
            text.push_str(&header_line(&self.columns, &self.opts));
        }
        self.header_printed = true;
        for row in &table.rows {
            text.push_str(&row_line(&self.columns, row, &self.opts, event));
        }
        out(&self.writer.format(&text))?;
        Ok(())
    }

    fn object(&mut self, object: &Value) -> anyhow::Result<()> {
        let mut object = object.clone();
        strip_managed_fields(&mut object);
        let mut text = String::new();
        if self.format == OutputFormat::Yaml && self.objects_printed > 0 {
            text.push_str("---\n");
        }
        text.push_str(&render_object(&object, self.format)?);
        self.objects_printed += 1;
        out(&text)?;
        Ok(())
    }

    fn event(&mut self, kind: &str, object: Value) -> anyhow::Result<()> {
        if self.format.is_table() {
            let table = Table::from_value(object, Timestamp::now())?;
            self.table(&table, Some(kind))
        } else {
            self.object(&object)
        }
    }
}

/// The resourceVersion an event moves the watch to.
fn event_resource_version(object: &Value) -> Option<String> {
    let from_meta = |v: &Value| {
        v.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())
            .map(str::to_string)
    };
    if object.get("kind").and_then(Value::as_str) == Some("Table") {
        return object
            .pointer("/rows/0/object")
            .and_then(from_meta)
            .or_else(|| from_meta(object));
    }
    from_meta(object)
}

async fn watch(
    session: &Session,
    args: &GetArgs,
    targets: &[Target],
    selectors: &Selectors,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let [target] = targets else {
        bail!("you may only specify a single resource type to watch");
    };
    if target.names.len() > 1 {
        bail!(
            "watch is only supported on individual resources and resource collections, but {} resources were found",
            target.names.len()
        );
    }
    let selectors = match target.names.first() {
        Some(name) => selectors.with_name(name),
        None => selectors.clone(),
    };
    let ns = session.namespace_for(&target.resource, args.all_namespaces);
    let req = ListRequest {
        resource: &target.resource,
        namespace: ns.as_deref(),
        selectors: &selectors,
        limit: args.chunk_size,
    };
    let mut printer = WatchPrinter {
        format,
        opts: table_options(args, format, target, false),
        no_headers: args.no_headers,
        header_printed: false,
        columns: Vec::new(),
        writer: TabWriter::remembering(TABLE_MINWIDTH, TABLE_PADDING),
        objects_printed: 0,
    };
    let mut rv = relist(session, &req, &mut printer, !args.watch_only).await?;
    let accept = if format.is_table() {
        ACCEPT_TABLE
    } else {
        ACCEPT_JSON
    };
    let mut failures_in_a_row: u32 = 0;
    let mut relists_in_a_row: u32 = 0;
    loop {
        let mut query = selectors.query();
        query.push(("watch", "true".to_string()));
        query.push(("allowWatchBookmarks", "true".to_string()));
        if !rv.is_empty() {
            query.push(("resourceVersion", rv.clone()));
        }
        let url = session
            .client
            .url(&target.resource.collection_path(ns.as_deref()), &query);
        let opened = session
            .client
            .send_raw(reqwest::Method::GET, url, accept, None, true)
            .await;
        let response = match opened {
            Ok(response) => response,
            Err(err) if err.code() == Some(410) && relists_in_a_row < WATCH_RELISTS_MAX => {
                relists_in_a_row += 1;
                rv = relist(session, &req, &mut printer, true).await?;
                continue;
            }
            Err(ApiError::Connect(text)) if failures_in_a_row < WATCH_RECONNECTS_MAX => {
                failures_in_a_row += 1;
                warn(&format!("warning: watch failed, reconnecting: {text}"));
                backoff(failures_in_a_row).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let mut stream = WatchStream::new(response);
        loop {
            match stream.next().await {
                Ok(Some(event)) => match event.kind.as_str() {
                    "ADDED" | "MODIFIED" | "DELETED" => {
                        failures_in_a_row = 0;
                        relists_in_a_row = 0;
                        if let Some(next) = event_resource_version(&event.object) {
                            rv = next;
                        }
                        printer.event(&event.kind, event.object)?;
                    }
                    "BOOKMARK" => {
                        failures_in_a_row = 0;
                        if let Some(next) = event_resource_version(&event.object) {
                            rv = next;
                        }
                    }
                    "ERROR" => {
                        let status = event.error_status();
                        if status.code == 410 && relists_in_a_row < WATCH_RELISTS_MAX {
                            relists_in_a_row += 1;
                            rv = relist(session, &req, &mut printer, true).await?;
                            break;
                        }
                        return Err(ApiError::Status(Box::new(status)).into());
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(WatchError::Api(ApiError::Connect(text)))
                    if failures_in_a_row < WATCH_RECONNECTS_MAX =>
                {
                    failures_in_a_row += 1;
                    warn(&format!("warning: {text}; reconnecting"));
                    break;
                }
                Err(err) => return Err(err.into()),
            }
        }
        backoff(failures_in_a_row.max(1)).await;
    }
}

/// Lists (printing the objects if `print`) and returns the list's resourceVersion.
async fn relist(
    session: &Session,
    req: &ListRequest<'_>,
    printer: &mut WatchPrinter,
    print: bool,
) -> anyhow::Result<String> {
    if printer.format.is_table() {
        let table = list_table(&session.client, req, Timestamp::now()).await?;
        if print {
            printer.table(&table, Some("ADDED"))?;
        } else if !table.columns.is_empty() {
            printer.columns = table.columns.clone();
        }
        Ok(table.resource_version)
    } else {
        let (items, rv) = list_objects(&session.client, req).await?;
        if print {
            for item in &items {
                printer.object(item)?;
            }
        }
        Ok(rv)
    }
}

async fn backoff(attempt: u32) {
    let factor = 1u64 << attempt.saturating_sub(1).min(4);
    tokio::time::sleep(Duration::from_millis(WATCH_RECONNECT_DELAY_MS * factor)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_versions_of_events() {
        let table = json!({"kind": "Table", "metadata": {"resourceVersion": "9"},
            "rows": [{"cells": [], "object": {"metadata": {"resourceVersion": "7"}}}]});
        assert_eq!(event_resource_version(&table).as_deref(), Some("7"));
        let bookmark = json!({"kind": "Pod", "metadata": {"resourceVersion": "12"}});
        assert_eq!(event_resource_version(&bookmark).as_deref(), Some("12"));
        assert_eq!(event_resource_version(&json!({})), None);
    }
}
